"""bench/onnx_torch.py executes our ONNX graphs with PyTorch like onnxruntime does (GPU numbers rely on it).

Needs torch, which is no project dependency: skips visibly without it (always in CI).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from streamproc.models.registry import DLIB_RESNET, RETINAFACE, SFACE, YUNET, ModelStore

pytest.importorskip("torch", reason="torch is not installed (not a project dependency); bench/onnx_torch.py untested")


def _onnx_torch() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "onnx_torch.py"
    spec = importlib.util.spec_from_file_location("onnx_torch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("which", "shape", "low", "high"),
    [
        (DLIB_RESNET, (3, 3, 150, 150), -120, 255),
        (RETINAFACE, (2, 3, 360, 640), -120, 255),
        (RETINAFACE, (1, 3, 333, 501), -120, 255),
        (SFACE, (3, 3, 112, 112), -1, 1),  # the graph takes (pixel - 127.5) / 128
        (YUNET, (1, 3, 320, 576), 0, 255),  # raw BGR pixels, batch 1, sides multiples of 32
    ],
    ids=["dlib", "retinaface-360p", "retinaface-odd-size", "sface", "yunet"],
)
def test_torch_port_matches_onnxruntime(which: object, shape: tuple[int, ...], low: float, high: float) -> None:
    model = ModelStore().path(which)[0]  # type: ignore[arg-type]
    batch = np.random.default_rng(0).uniform(low, high, shape).astype(np.float32)
    diffs = _onnx_torch().compare_with_onnxruntime(model, batch)
    print(f"{model.name} {shape}: max abs diff per output {diffs}")
    assert max(diffs) < 1e-4
