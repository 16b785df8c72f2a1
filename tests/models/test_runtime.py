"""Execution provider choice: GPU demands fail loudly instead of falling back to the CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest

from streamproc.config_recognition import RuntimeConfig
from streamproc.errors import ModelError, ProviderError
from streamproc.models.providers import (
    CPU,
    CUDA,
    TENSORRT,
    BatchRunner,
    choose_providers,
    create_session,
    provider_plan,
    uses_io_binding,
)
from streamproc.models.registry import RETINAFACE, ModelStore


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
    caplog.set_level("INFO", logger="streamproc.models.providers")
    session = create_session(_detector_model(), RuntimeConfig(device="auto"), "detector")
    assert session.get_providers()[0] in (CPU, CUDA)
    assert f"runs on {session.get_providers()[0]}" in caplog.text


def test_a_corrupt_model_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model" * 10)
    with pytest.raises(ModelError, match="cannot load detector model"):
        create_session(bad, RuntimeConfig(), "detector")


ENGINES = Path("/models/tensorrt-engines")


def test_tensorrt_plan_caches_engines_and_falls_back_to_cuda_then_cpu() -> None:
    plan = provider_plan(RuntimeConfig(device="tensorrt", precision="fp16"), [TENSORRT, CUDA, CPU], ENGINES)
    assert [name for name, _ in plan] == [TENSORRT, CUDA, CPU]
    trt = plan[0][1]
    assert trt["trt_fp16_enable"] == "True"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(ENGINES)
    assert plan[1][1]["cudnn_conv_algo_search"] in ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")
    assert plan[2][1] == {}
    fp32 = provider_plan(RuntimeConfig(device="tensorrt"), [TENSORRT, CUDA, CPU], ENGINES)
    assert fp32[0][1]["trt_fp16_enable"] == "False"


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cuda_plan_has_cuda_options(device: str) -> None:
    plan = provider_plan(RuntimeConfig.model_validate({"device": device}), [CUDA, CPU], ENGINES)
    assert [name for name, _ in plan] == [CUDA, CPU]
    assert plan[0][1]["arena_extend_strategy"] == "kSameAsRequested"
    assert all(isinstance(v, str) for _, opts in plan for v in opts.values())  # onnxruntime parses strings


def test_fp16_on_the_cpu_is_ignored_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamproc.models.providers")
    plan = provider_plan(RuntimeConfig(device="auto", precision="fp16"), [CPU], ENGINES)
    assert plan == [(CPU, {})]
    assert "fp16 ignored" in caplog.text


def test_plan_keeps_failing_loudly_for_a_missing_demanded_provider() -> None:
    with pytest.raises(ProviderError, match="tensorrt"):
        provider_plan(RuntimeConfig(device="tensorrt", precision="fp16"), [CUDA, CPU], ENGINES)


@pytest.mark.parametrize(
    ("active", "expected"),
    [([CPU], False), ([CUDA, CPU], True), ([TENSORRT, CUDA, CPU], True), ([], False)],
)
def test_io_binding_only_when_a_gpu_provider_runs_the_session(active: list[str], expected: bool) -> None:
    assert uses_io_binding(active) is expected


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeBinding:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def bind_cpu_input(self, name: str, array: np.ndarray) -> None:
        self.log.append(("input", (name, array.flags.c_contiguous)))

    def bind_output(self, name: str, device_type: str) -> None:
        self.log.append(("output", (name, device_type)))

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        self.log.append(("copy", None))
        return [np.ones((2, 4), np.float32)]


class _FakeSession:
    """Stands in for a CUDA session: records which API the runner used."""

    def __init__(self, providers: list[str]) -> None:
        self.providers = providers
        self.log: list[tuple[str, Any]] = []

    def get_providers(self) -> list[str]:
        return self.providers

    def get_outputs(self) -> list[_Named]:
        return [_Named("embedding")]

    def run(self, names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.log.append(("run", sorted(feed)))
        return [np.zeros((2, 4), np.float32)]

    def io_binding(self) -> _FakeBinding:
        return _FakeBinding(self.log)

    def run_with_iobinding(self, binding: _FakeBinding) -> None:
        self.log.append(("run_with_iobinding", None))


def test_batch_runner_binds_io_on_cuda() -> None:
    fake = _FakeSession([CUDA, CPU])
    runner = BatchRunner(cast(ort.InferenceSession, fake), "input")
    batch = np.zeros((2, 3, 4, 4), np.float32)[..., ::-1]  # a non-contiguous view must be made contiguous
    out = runner(batch)
    assert runner.io_binding and out[0].sum() == 8
    assert fake.log == [
        ("input", ("input", True)),
        ("output", ("embedding", "cuda")),
        ("run_with_iobinding", None),
        ("copy", None),
    ]


def test_batch_runner_uses_plain_run_on_cpu() -> None:
    fake = _FakeSession([CPU])
    runner = BatchRunner(cast(ort.InferenceSession, fake), "input")
    runner(np.zeros((2, 3, 4, 4), np.float32))
    assert not runner.io_binding and fake.log == [("run", ["input"])]


def test_cpu_session_results_are_those_of_session_run() -> None:
    session = create_session(_detector_model(), RuntimeConfig(device="cpu"), "detector")
    batch = np.random.default_rng(0).uniform(-100, 100, (2, 3, 64, 96)).astype(np.float32)
    runner = BatchRunner(session, session.get_inputs()[0].name)
    assert not runner.io_binding
    for got, want in zip(runner(batch), session.run(None, {"input": batch}), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a GPU")
def test_io_binding_on_cuda_matches_cpu_results() -> None:
    cuda = create_session(_detector_model(), RuntimeConfig(device="cuda"), "detector")
    cpu = create_session(_detector_model(), RuntimeConfig(device="cpu"), "detector")
    batch = np.random.default_rng(0).uniform(-100, 100, (2, 3, 64, 96)).astype(np.float32)
    runner = BatchRunner(cuda, "input")
    assert runner.io_binding
    for got, want in zip(runner(batch), cpu.run(None, {"input": batch}), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)
