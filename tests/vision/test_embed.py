"""Embedders: the default SFace graph, dlib, and user-supplied ArcFace-style models (../shared/models stand-ins)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamproc.config_recognition import ArcFaceConfig, DlibResnetConfig, RecognitionConfig
from streamproc.errors import ModelError
from streamproc.runtime.build import build_analyzer, build_embedder
from streamproc.vision.embed import OnnxEmbedder
from streamproc.vision.faces import FaceAnalyzer, central_face
from streamproc.vision.imageio import read_image

STAND_INS = [
    ("arcface_mbf512_faceplugin.onnx", 512, True),  # batch fixed at 1 in the model
    ("mobilefacenet192_expo.onnx", 192, False),
]


def _chips(analyzer: FaceAnalyzer, paths: list[Path]) -> np.ndarray:
    faces = []
    for p in paths:
        image = read_image(p)
        face = central_face(analyzer.faces(image), image.shape)
        assert face is not None, p
        faces.append(face.chip)
    return np.stack(faces)


def _lfw(shared_dir: Path) -> tuple[list[Path], list[str]]:
    """Three persons, two photos each."""
    names = ["Hugo_Chavez", "Colin_Powell", "Tony_Blair"]
    lfw = shared_dir / "data/identity/lfw"
    paths = [lfw / n / f"{n}_{i:04d}.jpg" for n in names for i in (1, 2)]
    return paths, [n for n in names for _ in (1, 2)]


def _check_separation(vectors: np.ndarray, labels: list[str], metric: str) -> None:
    n = len(labels)
    for i in range(n):
        for j in range(i + 1, n):
            if metric == "cosine":
                d = 1 - float(vectors[i] @ vectors[j])
            else:
                d = float(np.linalg.norm(vectors[i] - vectors[j]))
            limit = 0.6 if metric == "l2" else 0.65
            if labels[i] == labels[j]:
                assert d < limit, (labels[i], d)
            else:
                assert d > limit * 0.9, (labels[i], labels[j], d)


@pytest.mark.shared
def test_default_embedder_separates_real_people(shared_dir: Path, analyzer: FaceAnalyzer) -> None:
    paths, labels = _lfw(shared_dir)
    vectors = analyzer.embedder.embed(_chips(analyzer, paths))
    assert vectors.shape == (6, 128) and vectors.dtype == np.float32
    assert analyzer.embedder.identity.metric == "cosine"  # SFace
    _check_separation(vectors, labels, "cosine")


@pytest.fixture(scope="module")
def dlib_analyzer() -> FaceAnalyzer:
    return build_analyzer(RecognitionConfig(embedder=DlibResnetConfig()))


@pytest.mark.shared
def test_dlib_embedder_separates_real_people(shared_dir: Path, dlib_analyzer: FaceAnalyzer) -> None:
    analyzer = dlib_analyzer
    paths, labels = _lfw(shared_dir)
    vectors = analyzer.embedder.embed(_chips(analyzer, paths))
    assert vectors.shape == (6, 128) and analyzer.embedder.identity.metric == "l2"
    _check_separation(vectors, labels, "l2")


@pytest.mark.shared
@pytest.mark.parametrize(("filename", "dim", "fixed_batch"), STAND_INS)
def test_arcface_stand_ins(shared_dir: Path, filename: str, dim: int, fixed_batch: bool) -> None:
    cfg = RecognitionConfig(embedder=ArcFaceConfig(model=shared_dir / "models" / filename, max_batch=4))
    embedder = build_embedder(cfg)
    assert embedder.identity.dim == dim and embedder.identity.metric == "cosine"
    assert embedder.chip_size == 112
    from streamproc.runtime.build import build_analyzer

    analyzer = build_analyzer(cfg)
    paths, labels = _lfw(shared_dir)
    chips = _chips(analyzer, paths)
    together = embedder.embed(chips)  # 6 chips in batches of 4 (or one by one for a fixed-batch model)
    alone = np.concatenate([embedder.embed(chips[i : i + 1]) for i in range(len(chips))])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    _check_separation(together, labels, "cosine")


@pytest.mark.shared
def test_arcface_pinned_hash_and_wrong_input_size_are_refused(shared_dir: Path, tmp_path: Path) -> None:
    model = shared_dir / "models" / "mobilefacenet192_expo.onnx"
    with pytest.raises(ModelError, match="config pins"):
        build_embedder(RecognitionConfig(embedder=ArcFaceConfig(model=model, sha256="0" * 64)))
    with pytest.raises(ModelError, match="does not exist"):
        build_embedder(RecognitionConfig(embedder=ArcFaceConfig(model=tmp_path / "none.onnx")))
    with pytest.raises(ModelError, match="outputs 192-d"):
        build_embedder(RecognitionConfig(embedder=ArcFaceConfig(model=model, output_dim=256)))


def test_dlib_graph_refuses_arcface_sized_chips(dlib_analyzer: FaceAnalyzer) -> None:
    analyzer = dlib_analyzer
    embedder = analyzer.embedder
    assert isinstance(embedder, OnnxEmbedder)
    with pytest.raises(ValueError, match="expected"):
        embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))
    assert embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_flip_average_is_mirror_invariant(dlib_analyzer: FaceAnalyzer) -> None:
    analyzer = dlib_analyzer
    rng = np.random.default_rng(3)
    chip = rng.integers(0, 255, (1, 150, 150, 3), dtype=np.uint8)
    a = analyzer.embedder.embed(chip)
    b = analyzer.embedder.embed(np.ascontiguousarray(chip[:, :, ::-1]))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cpu_embedder_runs_without_io_binding(dlib_analyzer: FaceAnalyzer) -> None:
    analyzer = dlib_analyzer
    embedder = analyzer.embedder
    assert isinstance(embedder, OnnxEmbedder)
    if embedder._session.get_providers()[0] != "CPUExecutionProvider":
        pytest.skip("the default runtime picked a GPU here")
    assert not embedder._runner.io_binding
    chips = np.random.default_rng(5).integers(0, 255, (3, 150, 150, 3), dtype=np.uint8)
    tensor = embedder.preprocess(chips)
    direct = embedder._session.run(None, {"input": tensor})[0]
    np.testing.assert_array_equal(embedder._infer(tensor), direct)
