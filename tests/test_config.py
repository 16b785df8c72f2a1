"""Config parsing: unknown keys, wrong types and bad values are errors naming their key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import load_config, parse_config
from streamproc.config_recognition import ArcFaceConfig, DlibResnetConfig, RecognitionConfig, SFaceConfig
from streamproc.errors import ConfigError


def test_empty_config_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RecognitionConfig()


def test_embedder_kind_is_chosen_by_type() -> None:
    assert isinstance(parse_config({"embedder": {}}).embedder, SFaceConfig)
    assert isinstance(parse_config({"embedder": {"type": "dlib-resnet"}}).embedder, DlibResnetConfig)
    cfg = parse_config({"embedder": {"type": "arcface", "model": "m.onnx", "color": "bgr"}})
    assert isinstance(cfg.embedder, ArcFaceConfig) and cfg.embedder.color == "bgr"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"detector": {"score_treshold": 0.5}},
            "detector.score_treshold: unknown key; did you mean 'score_threshold'?",
        ),
        ({"detector": {"score_threshold": "high"}}, "detector.score_threshold"),
        ({"detector": {"score_threshold": 1.5}}, "detector.score_threshold: Input should be less than 1"),
        ({"embedder": {"type": "facenet"}}, "embedder"),
        ({"embedder": {"type": "arcface"}}, "embedder.arcface.model: Field required"),
        ({"runtime": {"device": "gpu"}}, "runtime.device"),
        ({"quality": {"min_face_px": -1}}, "quality.min_face_px"),
        ({"sources": []}, "sources: unknown key"),
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


def test_the_documented_example_is_exactly_the_defaults() -> None:
    """configs/recognition.yaml documents every key with its default; keep it true."""
    example = Path(__file__).resolve().parents[1] / "configs" / "recognition.yaml"
    assert load_config(example) == RecognitionConfig()


@pytest.mark.parametrize("name", ["demo.yaml", "file.yaml", "folder.yaml", "rtsp.yaml", "bodycam.yaml"])
def test_example_pipeline_configs_are_valid(name: str) -> None:
    from streamproc.config import load_pipeline_config

    cfg = load_pipeline_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.sources


def test_demo_yaml_is_what_the_demo_runs() -> None:
    from streamproc.cli.demo import demo_config_text

    assert (Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text() == demo_config_text()


def test_file_yaml_documents_the_defaults() -> None:
    from streamproc.config import PipelineConfig, load_pipeline_config

    cfg = load_pipeline_config(Path(__file__).resolve().parents[1] / "configs" / "file.yaml")
    defaults = PipelineConfig.model_validate(
        {"sources": [{"id": "cam7", "url": "/evidence/cam7.mp4"}], "watchlist": {"path": "/srv/streamproc/watchlist"}}
    )
    assert cfg == defaults


def test_file_yaml_names_every_pipeline_key() -> None:
    """Every key of every section appears in configs/file.yaml (recognition keys live in recognition.yaml)."""
    import yaml
    from pydantic import BaseModel

    from streamproc.config import PipelineConfig
    from streamproc.config_recognition import RecognitionConfig

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "file.yaml").read_text())

    def missing(model: type[BaseModel], node: dict[str, object], path: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            if model is PipelineConfig and name in RecognitionConfig.model_fields:
                continue
            if name not in node:
                out.append(f"{path}{name}")
                continue
            sub, value = field.annotation, node[name]
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = value[0]
                sub = field.annotation.__args__[0]  # type: ignore[union-attr]
            if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(value, dict):
                out += missing(sub, value, f"{path}{name}.")
        return out

    assert missing(PipelineConfig, data, "") == []
