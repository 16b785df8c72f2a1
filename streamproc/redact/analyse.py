"""Pass one: decode the whole clip, detect faces in every frame and track them.

Nothing here is recognition: only boxes, scores and track ids are kept (in memory), never pixels or
embeddings. Frames are numbered in decode order, which the render pass reproduces exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from numpy.typing import NDArray

from streamproc.config_recognition import TrackerConfig
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
class Detectors:
    """``native``: the detector for every frame. ``upscaled``: the same network on frames upscaled to
    ``detection.min_side``, used on the frames :class:`UpscaleSchedule` picks instead of ``native``; None: none."""

    native: Detector
    upscaled: Detector | None = None


class UpscaleSchedule:
    """Which frames go to the (slower) upscaled pass instead of the clip-size pass.

    A frame is upscaled when the last upscaled frame is ``every_s`` old (discovery: a face only the upscaled pass
    sees is found at most ``every_s`` after it appears, within the track pre-roll that hides it before its first
    detection) or when, within ``every_s``, the clip-size pass may be missing a face: a tracked face went
    undetected, or a weak detection (low_score <= score < score_threshold) belongs to no confirmed track.
    Clips of steady, confident faces are then detected at their own size (2-4x cheaper on 270p-360p), hard
    ones mostly upscaled. ``every_s`` 0: every frame is upscaled.
    """

    _EPS = 1e-3  # frame times are rounded (6 frames at 12 fps: 0.4999 s); gaps may exceed every_s by this

    def __init__(self, every_s: float, frame_s: float) -> None:
        self._every_s = every_s
        self._frame_s = frame_s  # nominal frame interval: the next frame is about this much later
        self._last_upscaled = -math.inf
        self._last_miss = -math.inf

    def upscale(self, t_s: float) -> bool:
        """Whether the frame at ``t_s`` is upscaled (asked once per frame, in order)."""
        # Discovery: upscale this frame if waiting for the next one would leave a gap longer than every_s.
        late = t_s - self._last_upscaled + self._frame_s > self._every_s + self._EPS
        due = late or t_s - self._last_miss <= self._every_s
        if due:
            self._last_upscaled = t_s
        return due

    def unsure(self, t_s: float) -> None:
        """The frame at ``t_s`` suggests the clip-size pass may miss a face (see the class doc)."""
        self._last_miss = t_s


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
    upscaled_frames: int = 0  # frames detected by the upscaled pass


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
    detectors: Detectors,
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
    every_s = tracking.extend_s if detection.discovery_s is None else detection.discovery_s
    schedule = UpscaleSchedule(every_s, 1.0 / info.fps if info.fps > 0 else 0.0)
    frames: list[FrameFaces] = []
    batch: list[tuple[float, ImageBGR]] = []
    tracked: set[int] = set()  # track ids matched on the previous frame
    upscaled_frames = 0

    def flush() -> None:
        nonlocal tracked, upscaled_frames
        # Decided per batch, from the frames before it: a miss moves the next batch to the upscaled pass.
        upscale = [detectors.upscaled is not None and schedule.upscale(t_s) for t_s, _ in batch]
        upscaled_frames += sum(upscale)
        images = [img for _, img in batch]
        for (t_s, _), dets in zip(batch, _detect(detectors, images, upscale), strict=True):
            out = tracker.update(dets, t_s)
            ids = np.zeros(len(dets), np.int64)
            for match in out.active:
                ids[match.det_index] = match.track_id
            weak = (dets.scores >= detection.low_score) & (dets.scores < detection.score_threshold)
            if bool((weak & (ids == 0)).any()) or tracked - {m.track_id for m in out.active}:
                schedule.unsure(t_s)
            tracked = {m.track_id for m in out.active}
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
    return Analysis(info, frames, upscaled_frames)


def _detect(detectors: Detectors, images: list[ImageBGR], upscale: list[bool]) -> list[Detections]:
    """Each image through the pass ``upscale`` picks for it, results in input order."""
    results: list[Detections] = [Detections.empty()] * len(images)
    for chosen, detector in ((False, detectors.native), (True, detectors.upscaled)):
        rows = [i for i, u in enumerate(upscale) if u == chosen]
        if rows and detector is not None:
            for i, dets in zip(rows, detector.detect([images[i] for i in rows]), strict=True):
                results[i] = dets
    return results
