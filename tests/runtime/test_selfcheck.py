"""The default embedder (SFace), the embedder self-check at start, and --embedder overrides that keep the YAML."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import STREAMPROC, sface_identity

from streamproc.cli.common import recognition_config
from streamproc.config_recognition import ArcFaceConfig, RecognitionConfig, SFaceConfig
from streamproc.errors import ConfigError, ModelError
from streamproc.models.registry import SFACE, ModelStore
from streamproc.runtime.build import build_analyzer, build_detector, build_embedder
from streamproc.runtime.selfcheck import check_embedder
from streamproc.search.watchlist import Watchlist


@pytest.fixture(scope="module")
def sface_model() -> Path:
    return ModelStore().path(SFACE)[0]


def test_default_embedder_is_sface_and_passes_the_self_check() -> None:
    analyzer = build_analyzer(RecognitionConfig())
    ident = analyzer.embedder.identity
    assert isinstance(RecognitionConfig().embedder, SFaceConfig)
    assert (ident.kind, ident.dim, ident.metric) == ("sface", 128, "cosine")
    assert ident.model_sha256 == SFACE.output_sha256


@pytest.mark.parametrize("update", [{"std": 1.0}, {"mean": 0.0, "std": 1.0}])
def test_a_badly_scaled_model_fails_the_self_check(sface_model: Path, update: dict[str, float]) -> None:
    cfg = RecognitionConfig(embedder=ArcFaceConfig(model=sface_model, **update))
    with pytest.raises(ModelError, match="self-check failed"):
        check_embedder(build_detector(cfg), build_embedder(cfg))


def test_cli_embedder_override_keeps_the_yaml_settings(tmp_path: Path, sface_model: Path) -> None:
    yaml = tmp_path / "rec.yaml"
    yaml.write_text(f"embedder:\n  type: arcface\n  model: {sface_model}\n  color: bgr\n  mean: 127.5\n  std: 128\n")
    cfg = recognition_config(yaml, "arcface", sface_model)
    assert isinstance(cfg.embedder, ArcFaceConfig) and cfg.embedder.color == "bgr"
    other = tmp_path / "other.onnx"
    cfg = recognition_config(yaml, None, other)
    assert isinstance(cfg.embedder, ArcFaceConfig) and (cfg.embedder.model, cfg.embedder.color) == (other, "bgr")
    assert isinstance(recognition_config(yaml, "sface").embedder, SFaceConfig)  # another kind: its own defaults
    with pytest.raises(ConfigError, match="--embedder arcface needs --embedder-model"):
        recognition_config(None, "arcface")
    with pytest.raises(ConfigError, match="--embedder must be sface, dlib-resnet, arcface"):
        recognition_config(None, "facenet")


def test_garbage_embedder_stops_the_command_with_one_line(tmp_path: Path, sface_model: Path) -> None:
    yaml = tmp_path / "rec.yaml"
    yaml.write_text("embedder:\n  type: arcface\n  model: m.onnx\n  mean: 0\n  std: 1\n")
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))  # readable, so the photo check passes
    with Watchlist.create(tmp_path / "wl", sface_identity()):
        pass  # exists, so the watchlist check passes
    done = subprocess.run(
        [STREAMPROC, "identify", "--watchlist", str(tmp_path / "wl"), "--operator", "t", "--reason", "r",
         "--config", str(yaml), "--embedder-model", str(sface_model), str(image)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: embedder self-check failed"), done.stderr
