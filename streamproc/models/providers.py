"""onnxruntime sessions with an explicit, logged choice of execution provider.

onnxruntime silently falls back to the CPU when a GPU provider fails to load; for a deployment that was
sized for a GPU that is an outage in disguise, so a demanded provider that does not end up first in the
session is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from streamproc.config_recognition import RuntimeConfig
from streamproc.errors import ModelError, ProviderError

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (CUDA, TENSORRT)

# HEURISTIC rather than onnxruntime's default EXHAUSTIVE: batch sizes and frame sizes vary during a stream,
# and EXHAUSTIVE benchmarks every convolution again for each new input shape, a stall in the middle of
# the stream. kSameAsRequested: the detector and embedder sessions share one GPU, and the default
# power-of-two arena growth can reserve twice the memory actually used.
CUDA_OPTIONS: dict[str, str] = {
    "device_id": "0",
    "cudnn_conv_algo_search": "HEURISTIC",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": "1",
}
TRT_ENGINE_DIR = "tensorrt-engines"

ProviderPlan = list[tuple[str, dict[str, str]]]


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Providers to request, best first. Raises ProviderError when a demanded one is missing."""
    if device == "cpu":
        return [CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    wanted = TENSORRT if device == "tensorrt" else CUDA
    if wanted not in available:
        raise ProviderError(
            f"runtime.device is '{device}' but onnxruntime offers only {', '.join(available)}; "
            "install the GPU build (pip install 'streamproc[gpu]') on a machine with a GPU, "
            "or set runtime.device to 'auto' or 'cpu'"
        )
    return [TENSORRT, CUDA, CPU] if device == "tensorrt" else [CUDA, CPU]


def provider_plan(runtime: RuntimeConfig, available: list[str], engine_cache: Path) -> ProviderPlan:
    """(provider, options) pairs for ``InferenceSession(providers=...)``, best first.

    Pure (no onnxruntime call) so the options are testable on a machine without a GPU. TensorRT engines
    take minutes to build, so they are cached in ``engine_cache``; CUDA then CPU follow TensorRT for the
    nodes TensorRT cannot take.
    """
    providers = choose_providers(runtime.device, available)
    fp16 = runtime.precision == "fp16"
    if fp16 and providers[0] == CPU:
        log.info("runtime.precision fp16 ignored: the model runs on the CPU, in fp32")
    elif fp16 and providers[0] == CUDA:
        log.info("runtime.precision fp16 ignored on CUDA: only the TensorRT provider (device: tensorrt) has fp16")
    plan: ProviderPlan = []
    for name in providers:
        if name == TENSORRT:
            plan.append(
                (
                    TENSORRT,
                    {
                        "device_id": "0",
                        "trt_fp16_enable": "True" if fp16 else "False",
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(engine_cache),
                        "trt_timing_cache_enable": "True",
                        "trt_timing_cache_path": str(engine_cache),
                    },
                )
            )
        elif name == CUDA:
            plan.append((CUDA, dict(CUDA_OPTIONS)))
        else:
            plan.append((name, {}))
    return plan


def create_session(model: Path, runtime: RuntimeConfig, purpose: str) -> ort.InferenceSession:
    """Open ``model`` on the configured device; logs the provider actually in use."""
    import onnxruntime as ort

    engine_cache = model.parent / TRT_ENGINE_DIR
    plan = provider_plan(runtime, ort.get_available_providers(), engine_cache)
    if plan[0][0] == TENSORRT:
        engine_cache.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Spinning worker threads burn the cores the decode and embed threads need (Hamilton clip, 2 cores:
    # 70 -> 77 fps without spinning; bench/RESULTS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if runtime.allow_spinning else "0")
    if runtime.threads is not None:
        options.intra_op_num_threads = runtime.threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=plan)
    except Exception as err:  # noqa: BLE001 - onnxruntime errors derive only from Exception
        raise ModelError(f"cannot load {purpose} model {model}: {str(err).splitlines()[0]}") from None
    active = session.get_providers()
    if runtime.device in ("cuda", "tensorrt") and active[0] != plan[0][0]:
        raise ProviderError(
            f"runtime.device is '{runtime.device}' but onnxruntime fell back to {active[0]} for {model.name} "
            "(GPU libraries failed to load); refusing to run silently on the CPU"
        )
    log.info("%s model %s runs on %s", purpose, model.name, active[0])
    return session


class BatchRunner:
    """Runs a one-input session on a float32 batch; the single place that picks IO binding or ``run``.

    On CUDA/TensorRT the batch is bound with IO binding and the outputs stay in device memory until one
    copy back, which saves onnxruntime's per-call staging allocations; on the CPU there is nothing to save,
    so plain ``session.run`` keeps that path exactly as before.
    """

    def __init__(self, session: ort.InferenceSession, input_name: str) -> None:
        self._session = session
        self._input = input_name
        self._outputs = [o.name for o in session.get_outputs()]
        self.io_binding = uses_io_binding(session.get_providers())

    def __call__(self, batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        if not self.io_binding:
            return self._session.run(None, {self._input: batch})
        binding = self._session.io_binding()
        binding.bind_cpu_input(self._input, np.ascontiguousarray(batch))
        for name in self._outputs:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def uses_io_binding(active_providers: list[str]) -> bool:
    """IO binding pays only when the session's first provider keeps tensors in GPU memory."""
    return bool(active_providers) and active_providers[0] in GPU_PROVIDERS
