"""End-to-end pipeline speed and latency on the public clips.

For each clip in <data>/video, one stream, detection on every frame at native size, processed as fast as
possible (decoder waits, nothing dropped):
- fps: frames / wall time of ``Pipeline.run`` (models loaded beforehand);
- per-frame latency: frame decoded -> detected, tracked, aligned and offered as a best shot (p50/p99);
- frame->event latency: best-shot frame decoded -> match event published, over every event of every clip;
- decode-only fps of the same clip with PyAV (the ceiling for a CPU pipeline);
- where the time goes: mean ms per frame for each stage (from the pipeline's own histograms).

Watchlist: Lin-Manuel Miranda and Barack Obama from <data>/identity/face_recognition (the Hamilton clip),
plus, so the other clips produce events to time, one face from frame 30 of each Intel clip.
Last line: key=value headline.

    python bench/bench_pipeline.py [--data ../shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from prometheus_client import CollectorRegistry

from streamproc.config import PipelineConfig
from streamproc.config_recognition import RecognitionConfig
from streamproc.feed.subscribe import collecting
from streamproc.runtime.build import build_analyzer, build_pipeline
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject, NewTemplate
from streamproc.search.watchlist import Watchlist
from streamproc.sysinfo import machine_description
from streamproc.types import Frame
from streamproc.vision.faces import FaceAnalyzer

STAGES = ("detect", "track", "align", "embed", "search", "policy", "publish")


def decode_fps(path: Path) -> float:
    start = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"
        for frame in container.decode(video=0):
            frame.to_ndarray(format="bgr24")
            n += 1
    return n / (time.perf_counter() - start)


def first_face_template(analyzer: FaceAnalyzer, clip: Path, at: int) -> NewTemplate | None:
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == at:
                image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
                faces = [f for f in analyzer.faces(image) if f.quality.passed]
                if not faces:
                    return None
                face = max(faces, key=lambda f: f.quality.face_px)
                return NewTemplate(analyzer.embed([face])[0], "0" * 64, face.quality.score)
    return None


def build_watchlist(
    analyzer: FaceAnalyzer,
    data: Path,
    directory: Path,
    clips: list[Path],
    persons: Sequence[str] | None = ("lin_manuel_miranda", "barack_obama"),
) -> int:
    """Enrol face_recognition persons (``None``: all of them; photos the quality gate refuses are skipped) and
    one face of each Intel clip, so its streams produce matches too; returns the subject count."""
    people = data / "identity" / "face_recognition"
    names = sorted(p.name for p in people.iterdir()) if persons is None else list(persons)
    subjects = 0
    with Watchlist.create(directory, analyzer.embedder.identity) as wl:
        for person in names:
            templates = []
            for photo in sorted((people / person).iterdir()):
                try:
                    templates += templates_from_images([photo], analyzer, FaceChoice(largest=True))
                except Exception:  # noqa: BLE001 - a refused photo is simply not enrolled
                    continue
            if templates:
                wl.enroll(NewSubject(person, person, "bench", "bench", "bench"), templates)
                subjects += 1
        for clip in sorted(set(clips)):
            if clip.name.startswith("intel"):
                template = first_face_template(analyzer, clip, at=30)
                if template is not None:
                    wl.enroll(NewSubject(clip.stem[:60], clip.stem, "bench", "bench", "bench"), [template])
                    subjects += 1
    return subjects


@dataclass(frozen=True)
class ClipResult:
    frames: int
    fps: float
    frame_latency: list[float]
    event_latency: list[float]
    events: int
    stage_ms: dict[str, float]
    embeddings: int
    faces: int


def run_clip(clip: Path, watchlist: Path, detect_batch: int, embedder: str) -> ClipResult:
    cfg = PipelineConfig.model_validate(
        {
            "sources": [{"id": "bench", "url": str(clip)}],
            "watchlist": {"path": str(watchlist)},
            "events": {"endpoint": "tcp://127.0.0.1:*"},
            "detector": {"max_side": None, "max_batch": detect_batch},  # native size, every frame
            "embedder": {"type": embedder},
        }
    )
    registry = CollectorRegistry()
    frame_latency: list[float] = []

    def on_frame(_sid: str, frame: Frame) -> None:
        frame_latency.append(time.time() - frame.captured_at)

    pipeline = build_pipeline(cfg, registry, on_frame=on_frame)
    with collecting(pipeline.publisher_endpoint) as events:
        time.sleep(0.3)
        start = time.perf_counter()
        stats = pipeline.run()["bench"]
        wall = time.perf_counter() - start
        time.sleep(0.3)
    pipeline.close()
    stage_ms = {}
    for stage in STAGES:
        total = registry.get_sample_value("streamproc_stage_seconds_sum", {"stream": "bench", "stage": stage})
        stage_ms[stage] = 1000 * (total or 0.0) / max(1, stats.frames)
    return ClipResult(
        frames=stats.frames,
        fps=stats.frames / wall,
        frame_latency=frame_latency,
        event_latency=[e.latency_ms["end_to_end"] / 1000 for e in events],
        events=len(events),
        stage_ms=stage_ms,
        embeddings=stats.embeddings,
        faces=stats.faces,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of the Hamilton clip (median fps).")
    parser.add_argument("--detect-batch", type=int, default=4, help="detector.max_batch (frames per call).")
    parser.add_argument("--embedder", default="sface", choices=("sface", "dlib-resnet"), help="embedder.type.")
    args = parser.parse_args()
    clips = sorted((args.data / "video").glob("*.mp4"))
    hamilton = args.data / "video" / "face_recognition_short_hamilton_clip.mp4"
    analyzer = build_analyzer(
        RecognitionConfig.model_validate({"detector": {"max_side": None}, "embedder": {"type": args.embedder}})
    )
    print(f"machine: {machine_description()}; onnxruntime CPU; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        watchlist = Path(tmp) / "wl"
        build_watchlist(analyzer, args.data, watchlist, clips)
        ham_runs = [run_clip(hamilton, watchlist, args.detect_batch, args.embedder) for _ in range(args.repeats)]
        ham_fps = statistics.median(r.fps for r in ham_runs)
        ham_decode = statistics.median(decode_fps(hamilton) for _ in range(args.repeats))
        ham = sorted(ham_runs, key=lambda r: r.fps)[len(ham_runs) // 2]  # the median run
        print("Hamilton runs, fps:", " ".join(f"{r.fps:.1f}" for r in ham_runs))
        frame_lat = np.array(ham.frame_latency) * 1000
        event_lat: list[float] = []
        print(f"{'clip':58s} {'frames':>6s} {'fps':>7s} {'decode':>7s} {'faces':>6s} {'shots':>5s} {'events':>6s}")
        for clip in clips:
            r = ham if clip == hamilton else run_clip(clip, watchlist, args.detect_batch, args.embedder)
            event_lat += r.event_latency
            print(
                f"{clip.name:58s} {r.frames:6d} {r.fps:7.1f} {decode_fps(clip):7.0f} "
                f"{r.faces:6d} {r.embeddings:5d} {r.events:6d}"
            )
        print("Hamilton, mean ms per frame by stage:", ", ".join(f"{k} {v:.2f}" for k, v in ham.stage_ms.items()))
        ev = np.array(event_lat) * 1000
        headline = {
            "fps": ham_fps,
            "decode_fps": ham_decode,
            "frame_p50_ms": float(np.percentile(frame_lat, 50)),
            "frame_p99_ms": float(np.percentile(frame_lat, 99)),
            "event_p50_ms": float(np.percentile(ev, 50)) if ev.size else float("nan"),
            "event_p99_ms": float(np.percentile(ev, 99)) if ev.size else float("nan"),
            "events": float(ev.size),
        }
        print(" ".join(f"{k}={v:.1f}" for k, v in headline.items()))


if __name__ == "__main__":
    main()
