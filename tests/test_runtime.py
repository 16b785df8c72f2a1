"""Execution provider choice: GPU demands fail loudly instead of falling back to the CPU."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from streamproc.config import RuntimeConfig
from streamproc.errors import ModelError, ProviderError
from streamproc.models.registry import RETINAFACE, ModelStore
from streamproc.runtime import CPU, CUDA, TENSORRT, choose_providers, create_session


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cpu", [TENSORRT, CUDA, CPU], [CPU]),
        ("auto", [CPU], [CPU]),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
        ("tensorrt", [TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU]),
    ],
)
def test_choose_providers(device: str, available: list[str], expected: list[str]) -> None:
    assert choose_providers(device, available) == expected


@pytest.mark.parametrize(("device", "available"), [("cuda", [CPU]), ("tensorrt", [CUDA, CPU])])
def test_demanded_gpu_that_is_missing_is_an_error(device: str, available: list[str]) -> None:
    with pytest.raises(ProviderError, match=device):
        choose_providers(device, available)


def _detector_model() -> Path:
    return ModelStore().path(RETINAFACE)[0]


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this machine has CUDA")
def test_session_demanding_cuda_on_a_cpu_machine_fails_loudly() -> None:
    with pytest.raises(ProviderError, match="onnxruntime offers only"):
        create_session(_detector_model(), RuntimeConfig(device="cuda"), "detector")


@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a GPU")
def test_session_on_cuda_really_runs_on_cuda() -> None:
    session = create_session(_detector_model(), RuntimeConfig(device="cuda"), "detector")
    assert session.get_providers()[0] == CUDA


def test_cpu_session_logs_the_provider(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="streamproc.runtime")
    session = create_session(_detector_model(), RuntimeConfig(device="auto"), "detector")
    assert session.get_providers()[0] in (CPU, CUDA)
    assert f"runs on {session.get_providers()[0]}" in caplog.text


def test_a_corrupt_model_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model" * 10)
    with pytest.raises(ModelError, match="cannot load detector model"):
        create_session(bad, RuntimeConfig(), "detector")
