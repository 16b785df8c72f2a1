"""Config parsing: unknown keys, wrong types and bad values are errors naming their key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import ArcFaceConfig, DlibResnetConfig, RecognitionConfig, load_config, parse_config
from streamproc.errors import ConfigError


def test_empty_config_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RecognitionConfig()


def test_embedder_kind_is_chosen_by_type() -> None:
    assert isinstance(parse_config({"embedder": {}}).embedder, DlibResnetConfig)
    cfg = parse_config({"embedder": {"type": "arcface", "model": "m.onnx", "color": "bgr"}})
    assert isinstance(cfg.embedder, ArcFaceConfig) and cfg.embedder.color == "bgr"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"detector": {"score_treshold": 0.5}}, "detector.score_treshold: Extra inputs are not permitted"),
        ({"detector": {"score_threshold": "high"}}, "detector.score_threshold"),
        ({"detector": {"score_threshold": 1.5}}, "detector.score_threshold: Input should be less than 1"),
        ({"embedder": {"type": "facenet"}}, "embedder"),
        ({"embedder": {"type": "arcface"}}, "embedder.arcface.model: Field required"),
        ({"runtime": {"device": "gpu"}}, "runtime.device"),
        ({"quality": {"min_face_px": -1}}, "quality.min_face_px"),
        ({"sources": []}, "sources: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_key_path(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "cfg.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("cfg.yaml: ")


@pytest.mark.parametrize(
    ("text", "fragment"), [("detector: [1, 2", "not valid YAML"), ("- a\n- b\n", "must be a mapping")]
)
def test_bad_yaml(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
