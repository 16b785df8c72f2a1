"""Pass one: decode the whole clip, detect faces in every frame and track them.

Nothing here is recognition: only boxes, scores and track ids are kept (in memory), never pixels or
embeddings. Frames are numbered in decode order, which the render pass reproduces exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from numpy.typing import NDArray

from streamproc.config import TrackerConfig
from streamproc.errors import SourceError
from streamproc.redact.prefetch import prefetch
from streamproc.redact.settings import RedactDetectionConfig, RedactTrackingConfig
from streamproc.types import Detections, ImageBGR
from streamproc.vision.track import FaceTracker

Progress = Callable[[int], None]
"""Called with the number of frames finished so far."""


class Detector(Protocol):
    def detect(self, images: Sequence[ImageBGR]) -> list[Detections]: ...


@dataclass(frozen=True)
class ClipInfo:
    """What the output must reproduce: size, rate, frame count (as declared by the container) and duration."""

    width: int
    height: int
    fps: float
    declared_frames: int
    duration_s: float
    audio_streams: int


@dataclass(frozen=True)
class FrameFaces:
    """One frame's detections: boxes (N, 4) float32 x1y1x2y2 in frame pixels, scores (N,) float32,
    track_ids (N,) int64 (0: not part of a confirmed track), landmarks (N, 5, 2) float32 (used only to align
    faces for an authorised --keep-subject)."""

    t_s: float
    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    track_ids: NDArray[np.int64]
    landmarks: NDArray[np.float32]


@dataclass(frozen=True)
class Analysis:
    info: ClipInfo
    frames: list[FrameFaces]


def probe(path: Path) -> ClipInfo:
    """Open ``path`` and read its video parameters; a file that is no video is a one-line SourceError."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError(f"{path}: no video stream")
            video = container.streams.video[0]
            rate = video.average_rate or video.guessed_rate or Fraction(25)
            duration = float(container.duration or 0) / 1e6
            return ClipInfo(
                width=video.width,
                height=video.height,
                fps=float(rate),
                declared_frames=int(video.frames or 0),
                duration_s=duration,
                audio_streams=len(container.streams.audio),
            )
    except av.FFmpegError as err:
        raise SourceError(f"{path}: cannot open as video ({_one_line(err)})") from None


def decode_bgr(path: Path, info: ClipInfo) -> Iterator[tuple[float, ImageBGR]]:
    """(time in seconds, (H, W, 3) uint8 BGR) for every frame in decode order; a damaged or truncated file is
    a one-line SourceError (fewer frames than the container declares counts as truncated)."""
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t_s = float(frame.time) if frame.time is not None else count / info.fps
                yield t_s, np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
                count += 1
    except av.FFmpegError as err:
        raise SourceError(f"{path}: damaged video at frame {count} ({_one_line(err)})") from None
    if count == 0 or (info.declared_frames and count < info.declared_frames):
        raise SourceError(f"{path}: truncated video: decoded {count} of {info.declared_frames} frames")


def _one_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def analyse(
    path: Path,
    detector: Detector,
    detection: RedactDetectionConfig,
    tracking: RedactTrackingConfig,
    progress: Progress | None = None,
) -> Analysis:
    """Detect and track every frame of ``path`` (decoded in a worker thread while the detector runs)."""
    info = probe(path)
    tracker = FaceTracker(
        TrackerConfig(
            high_score=detection.score_threshold,
            low_score=detection.low_score,
            match_iou=tracking.match_iou,
            min_hits=2,
            max_lost_s=tracking.max_gap_s,
        )
    )
    frames: list[FrameFaces] = []
    batch: list[tuple[float, ImageBGR]] = []

    def flush() -> None:
        for (t_s, _), dets in zip(batch, detector.detect([img for _, img in batch]), strict=True):
            out = tracker.update(dets, t_s)
            ids = np.zeros(len(dets), np.int64)
            for tracked in out.active:
                ids[tracked.det_index] = tracked.track_id
            frames.append(FrameFaces(t_s, dets.boxes.copy(), dets.scores.copy(), ids, dets.landmarks.copy()))
        batch.clear()
        if progress is not None:
            progress(len(frames))

    with contextlib.closing(prefetch(decode_bgr(path, info), depth=2 * detection.max_batch)) as decoded:
        for item in decoded:
            batch.append(item)
            if len(batch) >= detection.max_batch:
                flush()
    if batch:
        flush()
    return Analysis(info, frames)
