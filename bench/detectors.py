"""RetinaFace against YuNet (issue 13): milliseconds per frame, and track recall against bench/bodycam.py's reference.

    python bench/detectors.py [--data ../shared/data] [--work /tmp/bodycam/clips] [--frames 40]

Speed: each detector alone (``max_side: null``: the frame at native size, one frame a call, onnxruntime's
default threads) on real frames of the Hamilton clip at 640x360 (the original) and 1920x1080 (bicubic x3,
bench/bodycam_clips.py); median milliseconds a frame over ``--frames`` frames after 3 warm-up calls.

Recall: the reference of bench/bodycam.py (RetinaFace on every frame at native size plus downscaled to 640, the
same tracker, alignment and quality gate), over the same 1080p clips. Each detector is then run
- ``full``: every frame the same way as the reference (RetinaFace's ``full`` is the reference itself: 1.0);
- ``sched``: through ``detector.schedule`` at its configured interval and stride (bodycam.py's fast mode);
and scored with bodycam_clips.compare: reference tracks (>= 5 frames, a face that passed the quality gate) that
the mode also tracks; best shots within 10% of the reference's; ``extra`` tracks (>= 5 frames) that overlap no
reference track on any frame (false positives, or faces RetinaFace never found). The reference is RetinaFace's
own output, so it favours RetinaFace; there is no hand-labelled ground truth for these clips. ``ms`` of a mode:
detection + tracking + quality a frame, the loop (decode excluded).

Last line: ``yunet_ms_360p=… retina_ms_360p=… yunet_ms_1080p=… retina_ms_1080p=… yunet_recall=…
retina_recall=… yunet_full_recall=… yunet_sched_ms=… retina_sched_ms=…`` (``*_recall``: the schedule's).
Time it under ``flock -x /tmp/cpu.lock``.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bodycam_clips import (
    ModeRun,
    TrackLog,
    clip_parser,
    compare,
    every_frame,
    prepare,
    read_frames,
    require_videos,
    run_mode,
    scheduled,
)

from streamproc.config_recognition import QualityConfig, RecognitionConfig, ScheduleConfig
from streamproc.protocols import FaceDetector
from streamproc.runtime.build import build_detector
from streamproc.sysinfo import machine_description
from streamproc.types import ImageBGR
from streamproc.vision.embed import embedder_spec
from streamproc.vision.track import iou_matrix

HAMILTON = "face_recognition_short_hamilton_clip"
KINDS = ("retinaface", "yunet")
SHORT = {"retinaface": "retina", "yunet": "yunet"}


def detector_for(kind: str) -> tuple[FaceDetector, float, float]:
    """The detector at native size, and its NMS IoU and minimum face size (what the modes merge regions with)."""
    config = RecognitionConfig.model_validate({"detector": {"type": kind, "max_side": None}})
    return build_detector(config), config.detector.nms_iou, config.detector.min_face_px


def frames_of(path: Path, count: int) -> list[ImageBGR]:
    out: list[ImageBGR] = []
    for _, image in read_frames(path):
        out.append(image)
        if len(out) == count:
            break
    return out


def ms_per_frame(detector: FaceDetector, frames: list[ImageBGR]) -> float:
    for image in frames[:3]:
        detector.detect([image])
    times = []
    for image in frames:
        start = time.perf_counter()
        detector.detect([image])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@dataclass(frozen=True)
class Score:
    tracks: int  # reference tracks (>= 5 frames, a face that passed the quality gate)
    found: int  # of those, tracked by the mode
    shot_ok: int  # of those found, best-shot quality within 10% of the reference's
    extra: int  # the mode's tracks of >= 5 frames that overlap no reference track on any frame (IoU >= 0.5)
    ms: float  # detection + tracking + quality, a frame

    @property
    def recall(self) -> float:
        return self.found / self.tracks if self.tracks else float("nan")


def extra_tracks(ref: ModeRun, run: ModeRun, min_frames: int = 5, iou: float = 0.5) -> int:
    """Tracks the mode has and the reference never had: false positives (drawn faces, patterns), or faces the
    reference detector missed entirely."""
    extra = 0
    for track in run.tracks.values():
        if len(track.boxes) < min_frames:
            continue
        extra += not any(_overlaps(track, other, iou) for other in ref.tracks.values())
    return extra


def _overlaps(a: TrackLog, b: TrackLog, iou: float) -> bool:
    """Whether two tracks share a frame on which their boxes overlap by ``iou`` or more."""
    common = sorted(set(a.boxes) & set(b.boxes))
    if not common:
        return False
    ious = iou_matrix(np.array([a.boxes[i] for i in common]), np.array([b.boxes[i] for i in common]))
    return bool((np.diag(ious) >= iou).any())


def score(ref: dict[str, ModeRun], runs: dict[str, ModeRun]) -> Score:
    """The comparison summed over the clips."""
    tracks = found = shot_ok = extra = frames = 0
    seconds = 0.0
    for name, run in runs.items():
        c = compare(ref[name], run, gated=True)
        tracks, found, shot_ok = tracks + c.reference_tracks, found + c.found, shot_ok + c.quality_ok
        extra += extra_tracks(ref[name], run)
        frames, seconds = frames + run.frames, seconds + run.seconds
    return Score(tracks, found, shot_ok, extra, 1000 * seconds / max(frames, 1))


def main() -> None:
    parser = clip_parser(__doc__.splitlines()[0], Path("/tmp/bodycam/clips"))
    parser.add_argument("--frames", type=int, default=40, help="Frames timed per detector and size.")
    args = parser.parse_args()
    require_videos(args.data)
    print(f"machine: {machine_description()} ({platform.machine()})", flush=True)
    clips = prepare(args.data / "video", args.work)
    detectors = {kind: detector_for(kind) for kind in KINDS}
    sizes = {"360p": args.data / "video" / f"{HAMILTON}.mp4", "1080p": clips[f"{HAMILTON}_1080p"]}
    speed: dict[str, float] = {}
    for label, path in sizes.items():
        frames = frames_of(path, args.frames)
        for kind, (detector, _, _) in detectors.items():
            speed[f"{SHORT[kind]}_ms_{label}"] = ms_per_frame(detector, frames)
            print(f"{kind:10} {label:5} {speed[f'{SHORT[kind]}_ms_{label}']:7.1f} ms/frame (native size)", flush=True)

    schedule = ScheduleConfig.model_validate({"enabled": True})
    names = sorted(name for name in clips if name.endswith("1080p"))
    retina, retina_iou, retina_min = detectors["retinaface"]
    template = embedder_spec(RecognitionConfig().embedder).template  # the default embedder's chips
    ref = {name: run_mode(clips[name], every_frame(retina, retina_iou, retina_min), template) for name in names}
    print(f"reference: {sum(r.frames for r in ref.values())} frames of {len(names)} 1080p clips", flush=True)
    results = {"retinaface_full": score(ref, ref)}
    for kind, (detector, iou, min_px) in detectors.items():
        for mode in ("sched",) if kind == "retinaface" else ("sched", "full"):
            runs = {
                name: run_mode(
                    clips[name],
                    scheduled(detector, schedule, iou, min_px, QualityConfig().min_face_px)
                    if mode == "sched"
                    else every_frame(detector, iou, min_px),
                    template,
                )
                for name in names
            }
            for name in names:
                one = score(ref, {name: runs[name]})
                print(f"  {kind:10} {mode:5} {name:62} {one.found}/{one.tracks} extra {one.extra}", flush=True)
            results[f"{kind}_{mode}"] = score(ref, runs)
    for key, s in results.items():
        print(
            f"{key:16} recall {s.found}/{s.tracks} = {s.recall:.3f}, best shot within 10% {s.shot_ok}/{s.found}, "
            f"extra tracks {s.extra}, {s.ms:.1f} ms/frame, recall per 100 ms {100 * s.recall / s.ms:.2f}",
            flush=True,
        )
    print(
        " ".join(f"{k}={v:.1f}" for k, v in speed.items())
        + f" yunet_recall={results['yunet_sched'].recall:.3f} retina_recall={results['retinaface_sched'].recall:.3f}"
        f" yunet_full_recall={results['yunet_full'].recall:.3f} yunet_sched_ms={results['yunet_sched'].ms:.1f}"
        f" retina_sched_ms={results['retinaface_sched'].ms:.1f}"
    )


if __name__ == "__main__":
    main()
