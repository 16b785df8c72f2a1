"""Detector and embedder speed on this machine.

Detector: ms per frame at 640x360 (frames of the Hamilton clip decoded with PyAV) and at 1280x720 (the
same frames upscaled). Embedder: ms per face at batch 1, 8 and 32, with and without mirror averaging.
Medians over repeated runs after a warm-up. Last line: key=value headline.

    python bench/bench_recognition.py [--data ../shared/data] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import av
import cv2
import numpy as np

from streamproc.config_recognition import DlibResnetConfig, RecognitionConfig, RetinaFaceConfig
from streamproc.runtime.build import build_detector, build_embedder
from streamproc.sysinfo import machine_description
from streamproc.vision.faces import FaceAnalyzer, central_face
from streamproc.vision.imageio import read_image
from streamproc.vision.quality import QualityGate


def median_ms(fn: object, repeats: int) -> float:
    assert callable(fn)
    fn()  # warm-up (allocations, first-call graph optimisation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def clip_frames(path: Path, n: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= n:
                break
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    native = RecognitionConfig(detector=RetinaFaceConfig(max_side=None))
    detector = build_detector(native)
    frames = clip_frames(args.data / "video" / "face_recognition_short_hamilton_clip.mp4", 40)
    assert frames[0].shape[:2] == (360, 640), frames[0].shape
    big = [cv2.resize(f, (1280, 720), interpolation=cv2.INTER_LINEAR) for f in frames]
    results: dict[str, float] = {}
    for label, batch in (("640x360", frames), ("1280x720", big)):
        idx = iter(range(10**9))
        results[f"detect_ms_{label}"] = median_ms(
            lambda b=batch, i=idx: detector.detect([b[next(i) % len(b)]]), args.repeats
        )
        results[f"detect_ms_{label}_batch8"] = (
            median_ms(lambda b=batch: detector.detect(b[:8]), max(5, args.repeats // 4)) / 8
        )

    lfw = sorted((args.data / "identity" / "lfw").glob("*/*_0001.jpg"))[:32]
    for flip in (False, True):
        cfg = RecognitionConfig(embedder=DlibResnetConfig(flip_average=flip))
        embedder = build_embedder(cfg)
        analyzer = FaceAnalyzer(detector, embedder, QualityGate(cfg.quality))
        chips = []
        for p in lfw:
            img = read_image(p)
            face = central_face(analyzer.faces(img), img.shape)
            assert face is not None
            chips.append(face.chip)
        stack = np.stack(chips)
        tag = "_flip" if flip else ""
        for n in (1, 8, 32):
            results[f"embed_ms_per_face_b{n}{tag}"] = (
                median_ms(lambda n=n, e=embedder, s=stack: e.embed(s[:n]), args.repeats) / n
            )

    print(f"machine: {machine_description()}; onnxruntime CPU; python {platform.python_version()}")
    for key, value in results.items():
        print(f"{key:34s} {value:8.2f}")
    print(" ".join(f"{k}={v:.2f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
