"""Body-camera-sized clips made from the public clips, and the offline track comparison of bench/bodycam.py.

Clips (written once into the work folder, H.264 via PyAV's libx264, crf 18, preset veryfast, yuv420p, the
source's own frame rate and frame count):
- ``<clip>_1080p.mp4`` / ``<clip>_720p.mp4``: every frame upscaled with bicubic interpolation (cv2.INTER_CUBIC)
  to 1920x1080 / 1280x720 (Hamilton 640x360: x3 / x2; the Intel clips 480x270: x4 / x2.67). Faces get bigger,
  not smaller: these check speed and that nothing is lost at a higher resolution;
- ``crowd_1080p.mp4``: a 3x3 mosaic at 1920x1080, 30 fps, 275 frames, of the public clips at their **native**
  size (each in a 640x360 cell, the 480x270 ones centred on grey): many small faces (~15-60 px) spread over
  the frame, which is what the downscaled pass loses and the native tiles must find;
- ``lfw_street_1080p.mp4`` (when the data has ``identity/lfw``): 1,200 frames at 1920x1080, 30 fps, of 320 LFW
  persons with at least two photos (drawn with a fixed seed; the first photo walks, the others check the best
  shots' identity) walking across a drawn, face-free street: each head cut from its photo with a feathered
  ellipse, face 28-150 px wide (log-uniform) and growing or shrinking by 0.7-1.4x, in view for 1.5-6 s, at up
  to 6 px a frame with a gait's bob and the motion blur of half a frame's shutter, defocused by a blur of sigma
  0-1.5 px, brightness x0.3-1.15 (log-uniform: dark faces too), nearer faces in front of farther ones, and the
  whole view swaying like a worn camera. About 25 faces a frame, many near the quality gate's size: many more
  face tracks (~170 that pass the gate) than the public clips hold (~30), so a recall near 0.98 can be told
  from one near 0.9. Synthetic: real faces, drawn motion; it checks what the schedule finds, not how a real
  street looks.

Each clip is written once and reused; a stamp beside it (``<clip>.mp4.stamp``: this module's sha256 and the
street's seed) makes :func:`prepare` write it again after this module changes, so a changed generator is never
measured on an old clip.

Comparison: the every-frame, full-resolution mode (detector at native size on every frame) against the
schedule, both through the same tracker, quality gate and alignment on the native frame, and the product's
best-shot selector (which chips would be embedded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.config import BestShotConfig
from streamproc.config_recognition import QualityConfig, ScheduleConfig, TrackerConfig
from streamproc.protocols import FaceDetector
from streamproc.stream.schedule import DetectionSchedule
from streamproc.stream.source import to_bgr
from streamproc.types import ChipRGB, Detections, ImageBGR
from streamproc.vision.align import ChipTemplate, align
from streamproc.vision.bestshot import BestShotSelector, Shot
from streamproc.vision.quality import QualityGate
from streamproc.vision.refine import NativeView, cut_view, refined_chips
from streamproc.vision.regions import Region, detect_regions, drop_straddling, whole_frame
from streamproc.vision.track import FaceTracker, Predictions, iou_matrix

SIZES = {"1080p": (1920, 1080), "720p": (1280, 720)}
CROWD_FRAMES = 275


def _stamp() -> str:
    """What made the clips: this module's source and the street's seed (a module attribute, so a bench may
    draw another street)."""
    return hashlib.sha256(Path(__file__).read_bytes() + f"\nSTREET_SEED={STREET_SEED}".encode()).hexdigest()


def _current(path: Path) -> bool:
    """Whether ``path`` exists and was written by this module as it is now (see :func:`_stamp`)."""
    stamp = path.with_name(path.name + ".stamp")
    return path.exists() and stamp.exists() and stamp.read_text() == _stamp()


def _write(path: Path, frames: Iterator[ImageBGR], rate: Fraction, width: int, height: int) -> None:
    """Encode ``frames`` to ``path`` (through a temporary file, so a cut-short run leaves no half clip), then
    its stamp."""
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    tmp.rename(path)
    path.with_name(path.name + ".stamp").write_text(_stamp())


def clip_parser(description: str, work: Path) -> argparse.ArgumentParser:
    """The clip benches' command line: ``--data`` (the shared data folder, ../shared/data beside the project)
    and ``--work`` (where :func:`prepare` writes the derived clips, default ``work``); add the bench's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--work", type=Path, default=work)
    return parser


def require_videos(data: Path) -> None:
    """Exit 2 with one line when ``data`` has no video folder (a user mistake, not a traceback)."""
    if not (data / "video").is_dir():
        print(f"error: no video folder in {data}", file=sys.stderr)
        raise SystemExit(2)


def read_frames(path: Path) -> Iterator[tuple[float, ImageBGR]]:
    """(pts seconds, BGR frame) of every frame of a clip."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        for frame in container.decode(stream):
            base = stream.time_base
            pts = float(frame.pts * base) if frame.pts is not None and base is not None else 0.0
            yield pts, to_bgr(frame)  # the pixels a VideoSource gives the pipeline


def clip_rate(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return Fraction(rate) if rate else Fraction(30)


def _upscaled(src: Path, width: int, height: int) -> Iterator[ImageBGR]:
    for _, image in read_frames(src):
        yield np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)


def _crowd(sources: list[Path]) -> Iterator[ImageBGR]:
    clips = [([img for _, img in read_frames(p)], float(clip_rate(p))) for p in sources]
    for i in range(CROWD_FRAMES):
        canvas = np.full((1080, 1920, 3), 128, np.uint8)
        for cell in range(9):
            frames, rate = clips[cell % len(clips)]
            image = frames[int((i / 30 + cell * 0.37) * rate) % len(frames)]  # offsets: cells not in step
            h, w = image.shape[:2]
            y0, x0 = (cell // 3) * 360 + (360 - h) // 2, (cell % 3) * 640 + (640 - w) // 2
            canvas[y0 : y0 + h, x0 : x0 + w] = image
        yield canvas


STREET_FRAMES = 1200
STREET_WALKERS = 320
STREET_SEED = 13
STREET = "lfw_street_1080p"  # the street's file stem
# Where LFW's 250x250 photos hold the face (RetinaFace's median box over a random 40: x 79-173, y 63-192): the
# sprite is the head inside an ellipse around it, scaled so the box width becomes the walker's face size.
_LFW_CENTRE, _LFW_FACE_W, _LFW_AXES = (125.0, 127.0), 95.0, (80.0, 100.0)


@dataclass(frozen=True)
class _Walker:
    sprite: NDArray[np.float32]  # (H, W, 3) BGR of the LFW photo, premultiplied by alpha
    alpha: NDArray[np.float32]  # (H, W) in [0, 1]: the feathered ellipse around the head
    start: int  # first frame (negative: already walking when the clip starts)
    frames: int
    x0: float  # face centre on the first frame (pixels of the street canvas)
    y0: float
    vx: float  # pixels a frame
    vy: float
    size0: float  # face box width on the first and last frame
    size1: float
    defocus: float  # Gaussian blur sigma, canvas pixels
    photo: Path  # the LFW photo the head is cut from

    def at(self, t: int) -> tuple[float, float, float]:
        """Face centre x, y (canvas pixels) and face box width on the walker's ``t``-th frame."""
        size = self.size0 + (self.size1 - self.size0) * t / max(self.frames - 1, 1)
        bob = 0.05 * size * math.sin(2 * math.pi * t / 32)  # the gait's
        return self.x0 + self.vx * t, self.y0 + self.vy * t + bob, size


def _walker_sprite(photo: Path, gain: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The head of an LFW photo (250x250 BGR) as (premultiplied sprite, alpha), its brightness times ``gain``."""
    image = np.asarray(cv2.imread(str(photo)), np.float32) * np.float32(gain)
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - _LFW_CENTRE[0]) / _LFW_AXES[0]) ** 2 + ((yy - _LFW_CENTRE[1]) / _LFW_AXES[1]) ** 2)
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0).astype(np.float32)  # feathered edge, 15% of the radius
    return image * alpha[..., None], alpha


def _street_background(rng: np.random.Generator, height: int, width: int) -> ImageBGR:
    """A face-free street: sky, facades with rows of windows, a pavement; blurred, as a lens would."""
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[: height // 3] = (200, 170, 140)
    canvas[height // 3 :] = (95, 100, 105)
    x = 0
    while x < width:
        w = int(rng.integers(120, 420))
        top = int(rng.integers(40, height // 3))
        colour = tuple(int(c) for c in rng.integers(60, 200, 3))
        cv2.rectangle(canvas, (x, top), (x + w, int(height * 0.62)), colour, -1)
        for wy in range(top + 30, int(height * 0.58), 70):
            for wx in range(x + 20, x + w - 40, 60):
                cv2.rectangle(canvas, (wx, wy), (wx + 30, wy + 40), (40, 45, 50), -1)
        x += w + int(rng.integers(0, 60))
    noise = rng.normal(0.0, 6.0, canvas.shape)
    return np.asarray(cv2.GaussianBlur(np.clip(canvas + noise, 0, 255).astype(np.uint8), (5, 5), 0), np.uint8)


_STREET_PAD = 64  # the camera's sway shows different parts of a canvas this much larger on each side


def _street_photos(lfw: Path) -> list[Path]:
    """The first photo of each LFW person with at least two (``lfw``: a folder of person folders of .jpg
    photos), so every walker's best shots can be checked against another photo of the person
    (bench/bodycam_identity.py); of every person when none has two."""
    persons = [sorted(jpgs) for p in sorted(lfw.iterdir()) if p.is_dir() and (jpgs := list(p.glob("*.jpg")))]
    several = [jpgs[0] for jpgs in persons if len(jpgs) >= 2]
    return several or [jpgs[0] for jpgs in persons]


def _street_scene(lfw: Path) -> tuple[ImageBGR, list[_Walker], NDArray[np.float64]]:
    """The street's canvas, its walkers (farthest first) and the camera's (frames, 2) x, y offsets. With
    fewer persons than walkers (a small held-out set), persons walk more than once."""
    rng = np.random.default_rng(STREET_SEED)
    pad = _STREET_PAD
    width, height = 1920 + 2 * pad, 1080 + 2 * pad
    background = _street_background(rng, height, width)
    photos = _street_photos(lfw)
    chosen = rng.choice(len(photos), size=STREET_WALKERS, replace=len(photos) < STREET_WALKERS)
    walkers = []
    for k in chosen:
        photo = photos[int(k)]
        sprite, alpha = _walker_sprite(photo, float(np.exp(rng.uniform(np.log(0.3), np.log(1.15)))))
        frames = int(rng.integers(45, 181))
        size0 = float(np.exp(rng.uniform(np.log(28.0), np.log(150.0))))
        size1 = float(np.clip(size0 * rng.uniform(0.7, 1.4), 24.0, 180.0))
        walkers.append(
            _Walker(
                sprite,
                alpha,
                int(rng.integers(-frames // 2, STREET_FRAMES - frames // 2)),
                frames,
                float(rng.uniform(pad, width - pad)),
                float(rng.uniform(0.3 * height, 0.85 * height)),
                float(rng.uniform(-6.0, 6.0)),
                float(rng.uniform(-0.8, 0.8)),
                size0,
                size1,
                float(rng.uniform(0.0, 1.5)),
                photo,
            )
        )
    walkers.sort(key=lambda w: w.size0 + w.size1)  # nearer (larger) faces drawn last, in front
    sway = np.cumsum(rng.normal(0.0, 1.5, (STREET_FRAMES, 2)), axis=0)
    return background, walkers, np.clip(sway - sway.mean(axis=0), -pad + 1, pad - 1)


def _street(lfw: Path) -> Iterator[ImageBGR]:
    """LFW faces walking across a street at 1920x1080, 30 fps: see the module docstring. Deterministic for a
    given LFW folder (``STREET_SEED``); ~40 ms a frame."""
    background, walkers, sway = _street_scene(lfw)
    pad, (height, width) = _STREET_PAD, background.shape[:2]
    for i in range(STREET_FRAMES):
        canvas = background.astype(np.float32)
        for w in walkers:
            t = i - w.start
            if not 0 <= t < w.frames:
                continue
            cx, cy, size = w.at(t)
            scale = size / _LFW_FACE_W
            # sprite pixel (u, v) -> canvas (cx + (u - centre) * scale, ...)
            m = np.array([[scale, 0, cx - _LFW_CENTRE[0] * scale], [0, scale, cy - _LFW_CENTRE[1] * scale]], np.float32)
            x1, y1 = int(max(cx - 130 * scale, 0)), int(max(cy - 130 * scale, 0))
            x2, y2 = int(min(cx + 130 * scale, width)), int(min(cy + 130 * scale, height))
            if x2 <= x1 or y2 <= y1:
                continue
            m[:, 2] -= (x1, y1)
            size_wh = (x2 - x1, y2 - y1)
            a = cv2.warpAffine(w.alpha, m, size_wh, flags=cv2.INTER_LINEAR)
            s = cv2.warpAffine(w.sprite, m, size_wh, flags=cv2.INTER_LINEAR)
            # Defocus, and motion blur over half a frame's shutter; blurring the premultiplied sprite and its
            # alpha alike keeps the edge's compositing right.
            streak = max(round(abs(w.vx) / 2), 1)
            for blurred in (a, s):
                if w.defocus >= 0.3:
                    cv2.GaussianBlur(blurred, (0, 0), w.defocus, dst=blurred)
                if streak > 1:
                    cv2.blur(blurred, (streak, 1), dst=blurred)
            a = a[..., None]
            roi = canvas[y1:y2, x1:x2]
            roi *= 1.0 - a
            roi += s
        ox, oy = (round(float(v)) for v in sway[i])
        view = canvas[pad + oy : pad + oy + 1080, pad + ox : pad + ox + 1920]
        yield np.clip(view, 0, 255).astype(np.uint8)


def street_walker_photo(lfw: Path) -> Callable[[dict[int, NDArray[np.float32]]], Path | None]:
    """For the street made from ``lfw``: which walker a track follows, given its boxes (frame index -> x1y1x2y2
    in the clip's pixels), as the LFW photo its head is cut from; None for a track that follows no one walker.
    It follows a walker when its box centre lies within the walker's drawn face (x within 0.35, y within 0.45
    face widths of its centre) on at least 80% of its frames."""
    _, walkers, sway = _street_scene(lfw)
    pad = _STREET_PAD

    def photo(boxes: dict[int, NDArray[np.float32]]) -> Path | None:
        votes: dict[int, int] = {}
        for i, b in boxes.items():
            mx, my = float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2
            ox, oy = (round(float(v)) for v in sway[i])
            for k, w in enumerate(walkers):
                if 0 <= i - w.start < w.frames:
                    cx, cy, size = w.at(i - w.start)
                    if abs(cx - pad - ox - mx) < 0.35 * size and abs(cy - pad - oy - my) < 0.45 * size:
                        votes[k] = votes.get(k, 0) + 1
        if not votes:
            return None
        k, n = max(votes.items(), key=lambda kv: kv[1])
        return walkers[k].photo if n >= 0.8 * len(boxes) else None

    return photo


def prepare(video_dir: Path, work: Path, lfw: Path | None = None) -> dict[str, Path]:
    """Write the clips (skipping those already written by this module as it is now), with the LFW street when
    ``lfw`` (a folder of LFW's person folders) is given and holds photos; name -> path."""
    work.mkdir(parents=True, exist_ok=True)
    sources = sorted(video_dir.glob("*.mp4"))
    out: dict[str, Path] = {}
    for src in sources:
        for label, (w, h) in SIZES.items():
            path = work / f"{src.stem}_{label}.mp4"
            if not _current(path):
                _write(path, _upscaled(src, w, h), clip_rate(src), w, h)
            out[path.stem] = path
    crowd = work / "crowd_1080p.mp4"
    if not _current(crowd):
        _write(crowd, _crowd(sources), Fraction(30), 1920, 1080)
    out[crowd.stem] = crowd
    street = work / f"{STREET}.mp4"
    if lfw is not None and lfw.is_dir() and (street.exists() or _street_photos(lfw)):
        if not _current(street):
            _write(street, _street(lfw), Fraction(30), 1920, 1080)
        out[street.stem] = street
    return out


# ---------------------------------------------------------------------------------------------- tracks
@dataclass
class TrackLog:
    """One confirmed track: frame index -> box, its best quality score and face size over all its frames, and
    the best quality among the chips the product's best-shot selector chose (the chips it would embed)."""

    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    # frame index -> predicted box, on frames where the mode did not look for this live track (the schedule
    # measures a steady face every other frame): the track is there, carried by its prediction
    carried: dict[int, np.ndarray] = field(default_factory=dict)
    best_quality: float = 0.0
    best_chosen: float = 0.0
    best_face_px: float = 0.0
    best_chip: ChipRGB | None = None  # the chip of the best chosen shot (None: no shot was chosen)
    passed_frames: set[int] = field(default_factory=set)  # frames whose face passed the quality gate

    @property
    def passed(self) -> bool:
        """Some face of the track passed the quality gate (it could have been embedded)."""
        return bool(self.passed_frames)


@dataclass
class ModeRun:
    tracks: dict[int, TrackLog]
    frames: int
    seconds: float  # detection + tracking + quality, the whole loop


Detect = Callable[[ImageBGR, Predictions], tuple[Detections, frozenset[int]]]
"""A mode's detection on one frame, given where the tracks are expected (for the schedule's windows): its
detections, and the keys of the tracks it did not look for."""


def run_mode(
    path: Path,
    detect: Detect,
    template: ChipTemplate,
    tracker_config: TrackerConfig | None = None,
    native_landmarks: FaceDetector | None = None,
) -> ModeRun:
    """Every frame of ``path`` through ``detect``, the tracker (``tracker_config``, default settings without),
    native-resolution alignment to the embedder's chip ``template`` (the quality gate's sharpness depends on
    how much of the head and background the chip holds), the quality gate and the product's best-shot selector
    (default settings). ``native_landmarks``: the stream's detector, to align the best chosen chip from
    landmarks found again in its native view, as the stream front does (``best_shot.native_landmarks``)."""
    tracker = FaceTracker(tracker_config or TrackerConfig())
    gate = QualityGate(QualityConfig())
    selector: BestShotSelector[tuple[ChipRGB, NativeView | None]] = BestShotSelector(BestShotConfig())
    tracks: dict[int, TrackLog] = {}
    frames, seconds = 0, 0.0

    def chosen(shots: list[Shot[tuple[ChipRGB, NativeView | None]]]) -> None:
        for shot in shots:
            log = tracks[shot.track_id]
            if shot.quality.score > log.best_chosen or log.best_chip is None:
                chip, view = shot.payload
                if view is not None and native_landmarks is not None:
                    chip = refined_chips(native_landmarks, [view], template)[0]
                log.best_chosen, log.best_chip = shot.quality.score, chip

    for index, (pts, image) in enumerate(read_frames(path)):
        t0 = time.perf_counter()
        expected = tracker.predict(pts)
        dets, unsearched = detect(image, expected)
        dets = drop_straddling(dets)  # as the stream front does
        out = tracker.update(dets, pts, unsearched)
        if unsearched:
            matched = {a.track_id for a in out.active} | set(out.ended)
            for key, track_id, box in zip(expected.keys, expected.ids, expected.boxes, strict=True):
                if track_id and key in unsearched and track_id not in matched:
                    tracks.setdefault(int(track_id), TrackLog()).carried[index] = box.copy()
        for tracked in out.active:
            i = tracked.det_index
            chip = align(image, dets.landmarks[i], template)
            q = gate.assess(dets.boxes[i], dets.landmarks[i], float(dets.scores[i]), chip)
            log = tracks.setdefault(tracked.track_id, TrackLog())
            log.boxes[index] = dets.boxes[i].copy()
            if q.passed:
                log.passed_frames.add(index)
            if q.score > log.best_quality:
                log.best_quality, log.best_face_px = q.score, q.face_px
            view = cut_view(image, dets.boxes[i], dets.landmarks[i]) if native_landmarks and q.passed else None
            selector.offer(tracked.track_id, pts, q, (chip, view))
        chosen(selector.due(pts))
        for track_id in out.ended:
            chosen(selector.end(track_id))
        seconds += time.perf_counter() - t0
        frames += 1
    for track_id in tracker.flush():
        chosen(selector.end(track_id))
    return ModeRun(tracks, frames, seconds)


def every_frame(detector: FaceDetector, nms_iou: float, min_face_px: float, also_side: int | None = 640) -> Detect:
    """The reference: the whole frame at native size on every frame, plus (``also_side``) the whole frame
    downscaled to that long side, merged: faces larger than RetinaFace's largest anchor (512 px, common in the
    upscaled clips) come apart into fragments at native size and are only found whole when downscaled. The
    merge is the product's own (:func:`~streamproc.vision.regions.merge`: NMS, size floor, a box mostly inside
    a much larger one is one face), so the reference is what the product's slow mode would produce."""

    def detect(image: ImageBGR, _tracks: Predictions) -> tuple[Detections, frozenset[int]]:
        h, w = image.shape[:2]
        regions = [whole_frame(h, w, None)] + ([whole_frame(h, w, also_side)] if also_side else [])
        return detect_regions(detector, image, regions, nms_iou, min_face_px), frozenset()

    return detect


def scheduled(
    detector: FaceDetector,
    config: ScheduleConfig,
    nms_iou: float,
    min_face_px: float,
    gate_face_px: float,
    level: int = 0,
) -> Detect:
    """The schedule with its load controller pinned at ``level`` (0: the configured interval and stride), so
    the offline comparison is deterministic; the live run reports the level it settled at. ``gate_face_px``:
    the quality gate's smallest face, as the stream front passes it."""
    schedule = DetectionSchedule(config, nms_iou, min_face_px, gate_face_px)
    schedule.pin_level(level)

    def detect(image: ImageBGR, tracks: Predictions) -> tuple[Detections, frozenset[int]]:
        plan = schedule.plan(image.shape[0], image.shape[1], tracks)
        return schedule.detect(detector, image, plan), plan.unsearched

    return detect


NotFaces = Sequence[tuple[int, Sequence[float]]]
"""Reference boxes judged by eye not to be a face: (frame index, x1y1x2y2 box) in the clip's pixels."""


def load_not_faces(path: Path, clip: str) -> list[tuple[int, list[float]]]:
    """The by-eye judgements of ``path`` (bench/bodycam_not_faces.json) for one clip (file stem)."""
    entries = json.loads(path.read_text())["clips"].get(clip, [])
    return [(int(e["frame"]), [float(v) for v in e["box"]]) for e in entries]


def judged_not_face(track: TrackLog, not_faces: NotFaces, iou: float = 0.5) -> bool:
    """Every frame on which the track passed the quality gate shows a box judged by eye not to be a face (box
    IoU >= ``iou`` on the same frame): the reference would have embedded no face from it."""
    judged: dict[int, list[Sequence[float]]] = {}
    for frame, box in not_faces:
        judged.setdefault(frame, []).append(box)
    return bool(track.passed_frames) and all(
        frame in judged
        and float(iou_matrix(track.boxes[frame][None], np.asarray(judged[frame], np.float64)).max()) >= iou
        for frame in track.passed_frames
    )


@dataclass(frozen=True)
class Comparison:
    reference_tracks: int  # tracks of >= min_frames frames in the reference
    found: int  # of those, found by the fast mode
    quality_ok: int  # of those found, best quality over all frames within 10% of the reference's best
    chosen_ok: int  # of those found, best chosen chip within 10% of the reference's best chosen chip
    missed: list[TrackLog]  # the missed reference tracks
    pairs: list[tuple[TrackLog, TrackLog]]  # each found reference track and the fast track that found it
    not_faces: int = 0  # reference tracks judged by eye not to be a face (counted in reference_tracks)
    not_faces_found: int = 0  # of those, found by the fast mode (counted in found)
    split: int = 0  # reference tracks that two or more fast tracks each follow (one face under several ids)

    @property
    def missed_face_px(self) -> list[float]:
        """Best face size of each missed reference track."""
        return [t.best_face_px for t in self.missed]


def compare(
    ref: ModeRun,
    fast: ModeRun,
    gated: bool,
    min_frames: int = 5,
    iou: float = 0.5,
    cover: float = 0.5,
    not_faces: NotFaces = (),
    split_frames: int = 3,
) -> Comparison:
    """A reference track is found when one fast track overlaps it (box IoU >= ``iou``) on at least ``cover`` of
    the reference track's frames; on a frame where the fast mode did not look for its track (the schedule
    measures a steady face every other frame by design), with the box the track was carried at. ``gated``: only
    reference tracks with a face that passed the quality gate, i.e. that could have been embedded, count. Its
    best shot is kept when the fast track's best quality is >= 90%
    of the reference's: over all frames (``quality_ok``), and among the chips each mode's best-shot selector
    chose, the ones the product would embed (``chosen_ok``). ``not_faces``: reference boxes judged by eye not to
    be a face; gated tracks made only of such boxes are counted apart (:func:`judged_not_face`), never removed.
    A reference track is ``split`` when two or more fast tracks each overlap it (IoU >= ``iou``) on at least
    ``split_frames`` frames."""
    long_tracks = [t for t in ref.tracks.values() if len(t.boxes) >= min_frames and (t.passed or not gated)]
    found = quality_ok = chosen_ok = judged = judged_found = split = 0
    missed: list[TrackLog] = []
    pairs: list[tuple[TrackLog, TrackLog]] = []
    for track in long_tracks:
        not_face = gated and judged_not_face(track, not_faces)
        judged += not_face
        best_cover, best_other, followers = 0.0, None, 0
        for other in fast.tracks.values():
            present = {**other.carried, **other.boxes}
            common = sorted(set(track.boxes) & set(present))
            if not common:
                continue
            a = np.array([track.boxes[i] for i in common])
            b = np.array([present[i] for i in common])
            hits = int((np.diag(iou_matrix(a, b)) >= iou).sum())
            followers += hits >= split_frames
            share = hits / len(track.boxes)
            if share > best_cover:
                best_cover, best_other = share, other
        split += followers >= 2
        if best_other is not None and best_cover >= cover:
            found += 1
            judged_found += not_face
            quality_ok += best_other.best_quality >= 0.9 * track.best_quality
            chosen_ok += best_other.best_chosen >= 0.9 * track.best_chosen
            pairs.append((track, best_other))
        else:
            missed.append(track)
    return Comparison(len(long_tracks), found, quality_ok, chosen_ok, missed, pairs, judged, judged_found, split)


def confirmed(
    path: Path, tracks: Sequence[TrackLog], detector: FaceDetector, samples: int = 8, iou: float = 0.5
) -> list[tuple[int, int]]:
    """Per track, (frames on which ``detector`` finds a face at box IoU >= ``iou`` with the track's box, frames
    sampled): up to ``samples`` frames spread over the track, each searched in a square of twice the box's longer
    side (at least 192 px) at native size, downscaled to 640 px at most. With an independent detector (YuNet
    against the RetinaFace reference) this tells a missed face from a box that is not one face (a shirt, a
    fragment of a large face, a loose box over the background), so a reader can see what a miss was."""
    wanted: dict[int, list[int]] = {}
    for k, track in enumerate(tracks):
        frames = sorted(track.boxes)
        picks = {frames[round(i * (len(frames) - 1) / (samples - 1))] for i in range(samples)}
        for f in picks if len(frames) > samples else frames:
            wanted.setdefault(f, []).append(k)
    counts = [[0, 0] for _ in tracks]
    for index, (_pts, image) in enumerate(read_frames(path)):
        if index > max(wanted, default=-1):
            break
        height, width = image.shape[:2]
        for k in wanted.get(index, []):
            box = tracks[k].boxes[index]
            side = int(min(max(2 * float(max(box[2] - box[0], box[3] - box[1])), 192.0), height, width))
            x0 = int(min(max(round((box[0] + box[2] - side) / 2), 0), width - side))
            y0 = int(min(max(round((box[1] + box[3] - side) / 2), 0), height - side))
            net = min(side, 640)
            found = detect_regions(detector, image, [Region(x0, y0, x0 + side, y0 + side, net, net)], 0.3)
            best = float(iou_matrix(box[None], found.boxes).max()) if len(found) else 0.0
            counts[k][0] += best >= iou
            counts[k][1] += 1
    return [(hit, n) for hit, n in counts]
