"""What one lent GPU machine can tell us about our two models in a few minutes.

The GPU machine has PyTorch + CUDA but only the CPU build of onnxruntime, so the GPU numbers come from
``bench/onnx_torch.py`` running the same ONNX graphs with torch ops (fp32 with TF32 off, and fp16 via
``.half()``), next to CPU onnxruntime on the same machine. Every number is printed with what produced it;
the last line is ``key=value`` for bench/RESULTS.md.

Needs only python3 with numpy + torch; onnxruntime, PyAV and OpenCV are used when present.

    # here, with the project venv: copy models, clip and real aligned chips into one carryable folder
    python bench/gpu_check.py prepare --out bench/.gpu_models
    # there (see bench/gpu_check.sh)
    python3 bench/gpu_check.py run --models bench/.gpu_models [--device cuda] [--budget-s 420]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DETECTOR = "retinaface_mnet025.onnx"
EMBEDDER = "dlib_resnet_v1.onnx"
CHIPS = "chips_150.npy"
CLIP = "face_recognition_short_hamilton_clip.mp4"
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32).reshape(1, 3, 1, 1)
FRAME_SIZES = {"360p": (360, 640), "1080p": (1080, 1920)}


def prepare(out: Path, data: Path, n_chips: int) -> None:
    """Copy the built models and the Hamilton clip into ``out`` and save real aligned chips from LFW."""
    from streamproc.config_recognition import RecognitionConfig
    from streamproc.models.registry import DLIB_RESNET, RETINAFACE, ModelStore
    from streamproc.runtime.build import build_analyzer
    from streamproc.vision.faces import central_face
    from streamproc.vision.imageio import read_image

    out.mkdir(parents=True, exist_ok=True)
    store = ModelStore()
    for spec, name in ((RETINAFACE, DETECTOR), (DLIB_RESNET, EMBEDDER)):
        shutil.copyfile(store.path(spec)[0], out / name)
    shutil.copyfile(data / "video" / CLIP, out / CLIP)
    analyzer = build_analyzer(RecognitionConfig())
    chips = []
    for path in sorted((data / "identity" / "lfw").glob("*/*_0001.jpg")):
        image = read_image(path)
        face = central_face(analyzer.faces(image), image.shape)
        if face is not None:
            chips.append(face.chip)
        if len(chips) == n_chips:
            break
    np.save(out / CHIPS, np.stack(chips))
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size:,} bytes")


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


def clip_frames(clip: Path, count: int) -> list[np.ndarray[Any, Any]]:
    """Up to ``count`` BGR frames of the clip via PyAV or OpenCV (whichever is installed)."""
    if importlib.util.find_spec("av") is not None:
        import av

        with av.open(str(clip)) as container:
            return [f.to_ndarray(format="bgr24") for _, f in zip(range(count), container.decode(video=0), strict=False)]
    if importlib.util.find_spec("cv2") is not None:
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
    return []


def detector_input(frames: list[np.ndarray[Any, Any]], height: int, width: int) -> np.ndarray[Any, Any]:
    import cv2

    resized = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]
    return np.ascontiguousarray(np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32) - BGR_MEAN)


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
    models = args.models
    precisions = {"fp32": torch.float32, "fp16": torch.float16}
    modules = {}
    for model in (EMBEDDER, DETECTOR):
        base = ot.OnnxModule.from_file(models / model).eval().to(device)
        modules[model] = {"fp32": base, "fp16": ot.OnnxModule.from_file(models / model).eval().to(device).half()}
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        # Agreement first (cheap, and the most important number if time runs short).
        chips_path = models / CHIPS
        if chips_path.is_file():
            chips = np.load(chips_path)
            x = torch.from_numpy(np.ascontiguousarray(chips.transpose(0, 3, 1, 2)).astype(np.float32)).to(device)
            d32 = modules[EMBEDDER]["fp32"](x)[0].float()
            d16 = modules[EMBEDDER]["fp16"](x.half())[0].float()
            diff = float((d16 - d32).abs().max())
            l2 = float((d16 - d32).norm(dim=1).max())
            gap = float(1 - torch.nn.functional.cosine_similarity(d16.double(), d32.double(), dim=1).min())
            print(
                f"embedder fp16 vs fp32 on {len(chips)} real LFW chips ({device.type}): max |diff| {diff:.2e}, "
                f"max L2 distance {l2:.2e} (dlib match threshold 0.6), max 1-cosine {gap:.2e}"
            )
            bench.keys.update(
                embed_fp16_maxdiff=f"{diff:.2e}", embed_fp16_maxl2=f"{l2:.2e}", embed_fp16_max1mcos=f"{gap:.2e}"
            )
        else:
            print(f"embedder fp16 vs fp32: skipped, {chips_path} missing (run `gpu_check.py prepare` here)")
        frames = clip_frames(models / CLIP, 8) if (models / CLIP).is_file() else []
        if frames:
            batch = torch.from_numpy(detector_input(frames, 360, 640)).to(device)
            s32 = modules[DETECTOR]["fp32"](batch)[1][..., 1].float()
            s16 = modules[DETECTOR]["fp16"](batch.half())[1][..., 1].float()
            diff = float((s16 - s32).abs().max())
            flips = int(((s16 >= 0.5) != (s32 >= 0.5)).sum())
            print(
                f"detector fp16 vs fp32 on {len(frames)} Hamilton frames at 640x360: max |face score diff| "
                f"{diff:.2e}, anchors crossing 0.5: {flips}"
            )
            bench.keys["detect_fp16_maxscorediff"] = f"{diff:.2e}"
        else:
            print("detector fp16 vs fp32: skipped, no clip frames (clip missing or no PyAV/OpenCV)")

        for prec, dtype in precisions.items():
            module = modules[EMBEDDER][prec]
            for b in args.batches:
                x = torch.from_numpy(rng.uniform(0, 255, (b, 3, 150, 150)).astype(np.float32)).to(device, dtype)
                label = f"embed torch-{device.type} {prec} batch {b} 150x150 chips"
                bench.time_fps(label, f"embed_{prec}_b{b}_fps", b, functools.partial(module, x), sync)
        for size, (h, w) in FRAME_SIZES.items():
            for prec, dtype in precisions.items():
                module = modules[DETECTOR][prec]
                for b in args.batches:
                    x = torch.from_numpy(rng.uniform(-120, 130, (b, 3, h, w)).astype(np.float32)).to(device, dtype)
                    label = f"detect torch-{device.type} {prec} batch {b} {w}x{h} frames"
                    bench.time_fps(label, f"detect_{size}_{prec}_b{b}_fps", b, functools.partial(module, x), sync)
                    del x
            if device.type == "cuda":
                torch.cuda.empty_cache()
        streams_1080p15(modules, device, sync, bench)


def streams_1080p15(modules: dict[str, dict[str, Any]], device: Any, sync: Callable[[], None], bench: Bench) -> None:
    """How many 1080p15 streams the GPU's models keep up with: K streams tick at 15 Hz; each tick detects K
    native 1920x1080 frames (fp16, one batch) and embeds 2 chips per stream (fp16; best shots are sparse, 2 is
    generous). K fits when the p95 tick time is under the 66.7 ms frame period; the tick time at that K stands in
    for the decision latency the GPU adds (models only: decode, tracking and publishing are not included)."""
    import torch

    if bench.over_budget("streams 1080p15"):
        bench.keys.update(gpu_streams_1080p15="skipped", p95_decision_ms="nan")
        return
    rng = np.random.default_rng(1)
    det, emb = modules[DETECTOR]["fp16"], modules[EMBEDDER]["fp16"]
    best_k, best_p95 = 0, float("nan")
    k = 1
    while k <= 64 and not bench.over_budget(f"streams 1080p15 K={k}"):
        try:
            frames = torch.from_numpy(rng.uniform(-120, 130, (k, 3, 1080, 1920)).astype(np.float32))
            frames = frames.to(device, torch.float16)
            chips = torch.from_numpy(rng.uniform(0, 255, (2 * k, 3, 150, 150)).astype(np.float32))
            chips = chips.to(device, torch.float16)
            ticks = []
            with torch.inference_mode():
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
    """CPU onnxruntime on this machine, smaller batches (the CPU is the slow side)."""
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime CPU: skipped, onnxruntime not installed")
        bench.keys["ort_cpu"] = "unavailable"
        return
    import onnxruntime as ort

    cores = os.cpu_count()
    print(f"onnxruntime {ort.__version__} CPU, providers {ort.get_available_providers()}, {cores} cores")
    rng = np.random.default_rng(1)
    shapes = [
        (EMBEDDER, "embed", "150x150 chips", (150, 150), args.ort_batches),
        (DETECTOR, "detect_360p", "640x360 frames", (360, 640), args.ort_batches[:2]),
        (DETECTOR, "detect_1080p", "1920x1080 frames", (1080, 1920), args.ort_batches[:1]),
    ]
    for model, key, what, (h, w), batches in shapes:
        session = ort.InferenceSession(str(args.models / model), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for b in batches:
            x = rng.uniform(0, 255, (b, 3, h, w)).astype(np.float32)
            label = f"{key.split('_')[0]} onnxruntime-cpu fp32 batch {b} {what}"
            bench.time_fps(
                label, f"ort_cpu_{key}_b{b}_fps", b, functools.partial(session.run, None, {name: x}), lambda: None
            )


def run_nvdec(args: argparse.Namespace, bench: Bench) -> None:
    """Decode the Hamilton clip with NVDEC through PyAV if the installed wheel has it; CPU decode alongside."""
    clip = args.models / CLIP
    if not clip.is_file():
        print(f"decode: skipped, {clip} missing")
        bench.keys["nvdec"] = "noclip"
        return
    if importlib.util.find_spec("av") is None:
        print("NVDEC: unsupported here (PyAV is not installed)")
        bench.keys["nvdec"] = "unsupported"
        return
    import av

    def decode(codec_name: str | None, hwaccel: Any = None) -> tuple[int, float]:
        """(frames, seconds) decoding the whole clip; ``codec_name`` forces a decoder such as h264_cuvid."""
        container: Any = av.open(str(clip), hwaccel=hwaccel) if hwaccel is not None else av.open(str(clip))
        with container:
            stream = container.streams.video[0]
            frames = 0
            t0 = time.perf_counter()
            if codec_name is None:
                for _ in container.decode(stream):
                    frames += 1
            else:
                ctx: Any = av.CodecContext.create(codec_name, "r")
                ctx.extradata = stream.codec_context.extradata
                for packet in container.demux(stream):
                    frames += len(ctx.decode(packet))
            return frames, time.perf_counter() - t0

    n, secs = decode(None)
    print(f"decode PyAV {av.__version__} CPU (software h264) Hamilton clip: {n} frames, {n / secs:,.1f} fps")
    bench.keys["decode_cpu_fps"] = f"{n / secs:.1f}"
    attempts: list[tuple[str, Callable[[], tuple[int, float]]]] = [("h264_cuvid", lambda: decode("h264_cuvid"))]
    hw = getattr(getattr(av, "codec", None), "hwaccel", None)
    if hw is not None:
        attempts.append(
            ("hwaccel cuda", lambda: decode(None, hw.HWAccel(device_type="cuda", allow_software_fallback=False)))
        )
    for what, attempt in attempts:
        try:
            n, secs = attempt()
        except Exception as err:  # noqa: BLE001 - an unsupported decoder raises one of many av/ffmpeg errors
            print(f"NVDEC via {what}: unsupported ({type(err).__name__}: {str(err).splitlines()[0][:160]})")
            continue
        print(f"NVDEC via {what} Hamilton clip: {n} frames, {n / secs:,.1f} fps")
        bench.keys["nvdec"] = what.replace(" ", "_")
        bench.keys["nvdec_fps"] = f"{n / secs:.1f}"
        return
    bench.keys["nvdec"] = "unsupported"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="here: copy models, clip and chips into one folder to carry")
    prep.add_argument("--out", type=Path, default=Path("bench/.gpu_models"))
    prep.add_argument("--data", type=Path, default=Path("../shared/data"))
    prep.add_argument("--chips", type=int, default=32)
    run = sub.add_parser("run", help="there: measure")
    run.add_argument("--models", type=Path, default=Path("bench/.gpu_models"))
    run.add_argument("--device", default="cuda", help="torch device: cuda (default) or cpu (to test this script)")
    run.add_argument("--batches", default="1,8,32,64", help="torch batch sizes")
    run.add_argument(
        "--ort-batches", default="1,8,32", help="CPU onnxruntime batch sizes (detector uses the first 2/1)"
    )
    run.add_argument("--repeats", type=int, default=10)
    run.add_argument("--budget-s", type=float, default=400.0, help="start no new measurement after this")
    run.add_argument("--skip", default="", help="comma list of parts to skip: torch,ort,nvdec")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.data, args.chips)
        return
    args.batches = [int(b) for b in args.batches.split(",")]
    args.ort_batches = [int(b) for b in args.ort_batches.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    for name in (DETECTOR, EMBEDDER):
        path = args.models / name
        print(f"model {path}: {path.stat().st_size:,} bytes" if path.is_file() else f"model {path}: MISSING")
    bench = Bench(args.budget_s, args.repeats)
    bench.keys["device"] = args.device
    parts = {"torch": run_torch, "nvdec": run_nvdec, "ort": run_onnxruntime}
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
