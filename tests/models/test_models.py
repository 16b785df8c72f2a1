"""Default models are built from installed packages (and one pinned wheel) and refused when their hash is wrong."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import STREAMPROC

from streamproc.errors import ModelError
from streamproc.models.registry import DEFAULT_MODELS, DLIB_RESNET, RETINAFACE, SFACE, YUNET, ModelStore


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    store.prepare()
    return store


def test_prepare_builds_the_default_models_with_recorded_hashes(built: ModelStore) -> None:
    manifest = json.loads((built.cache_dir / "manifest.json").read_text())
    assert set(manifest["models"]) == {RETINAFACE.name, DLIB_RESNET.name, SFACE.name, YUNET.name}
    assert manifest["models"][RETINAFACE.name]["sha256"] == RETINAFACE.output_sha256
    assert manifest["models"][RETINAFACE.name]["size"] == 1_736_694
    assert manifest["models"][DLIB_RESNET.name]["source_sha256"] == DLIB_RESNET.source_sha256
    assert manifest["models"][SFACE.name]["sha256"] == SFACE.output_sha256
    assert manifest["models"][YUNET.name]["sha256"] == YUNET.output_sha256
    for spec in DEFAULT_MODELS:
        assert built.verify(spec).sha256 == manifest["models"][spec.name]["sha256"]


def test_rebuild_is_reproducible(built: ModelStore, tmp_path: Path) -> None:
    again = ModelStore(tmp_path).prepare()
    assert {r.name: r.sha256 for r in again} == {r.name: r.sha256 for r in built.records()}


def test_a_modified_model_file_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.prepare()
    path = tmp_path / RETINAFACE.filename
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="refusing a modified model"):
        store.path(RETINAFACE)
    store.prepare(force=True)
    assert store.verify(RETINAFACE).sha256 == RETINAFACE.output_sha256


def test_missing_model_without_auto_prepare_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="streamproc models prepare"):
        ModelStore(tmp_path).path(DLIB_RESNET, auto_prepare=False)


def test_cli_prepare_and_list(tmp_path: Path) -> None:
    done = subprocess.run(
        [STREAMPROC, "models", "prepare", "--cache-dir", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert RETINAFACE.output_sha256 in done.stdout  # type: ignore[operator]
    listed = subprocess.run(
        [STREAMPROC, "models", "list", "--cache-dir", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert listed.stdout.count(" ok ") == len(DEFAULT_MODELS)
