"""onnxruntime sessions with an explicit, logged choice of execution provider.

onnxruntime silently falls back to the CPU when a GPU provider fails to load; for a deployment that was
sized for a GPU that is an outage in disguise, so a demanded provider that does not end up first in the
session is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from streamproc.config import RuntimeConfig
from streamproc.errors import ModelError, ProviderError

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


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


def create_session(model: Path, runtime: RuntimeConfig, purpose: str) -> ort.InferenceSession:
    """Open ``model`` on the configured device; logs the provider actually in use."""
    import onnxruntime as ort

    providers = choose_providers(runtime.device, ort.get_available_providers())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Spinning worker threads burn the cores the decode and embed threads need (Hamilton clip, 2 cores:
    # 70 -> 77 fps without spinning; bench/RESULTS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if runtime.allow_spinning else "0")
    if runtime.threads is not None:
        options.intra_op_num_threads = runtime.threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime errors derive only from Exception
        raise ModelError(f"cannot load {purpose} model {model}: {str(err).splitlines()[0]}") from None
    active = session.get_providers()
    if runtime.device in ("cuda", "tensorrt") and active[0] != providers[0]:
        raise ProviderError(
            f"runtime.device is '{runtime.device}' but onnxruntime fell back to {active[0]} for {model.name} "
            "(GPU libraries failed to load); refusing to run silently on the CPU"
        )
    log.info("%s model %s runs on %s", purpose, model.name, active[0])
    return session
