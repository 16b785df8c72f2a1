"""redact.yaml: the documented example is the defaults; mistakes name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.redact.settings import RedactConfig, load_redact_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "redact.yaml"


def test_the_documented_example_is_exactly_the_defaults() -> None:
    assert load_redact_config(EXAMPLE) == RedactConfig()


def test_every_key_is_documented() -> None:
    text = EXAMPLE.read_text()

    def keys(model: type[RedactConfig], prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            out.append(name)
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                out += keys(sub, f"{prefix}{name}.")
        return out

    missing = [k for k in keys(RedactConfig) if f"{k}:" not in text]
    assert not missing


def test_a_typo_is_an_error_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "redact.yaml"
    bad.write_text("tracking:\n  max_gap: 2\n")
    with pytest.raises(ConfigError, match=r"tracking\.max_gap"):
        load_redact_config(bad)
    bad.write_text("detection:\n  low_score: 0.6\n  score_threshold: 0.5\n")
    with pytest.raises(ConfigError, match="low_score"):
        load_redact_config(bad)
    bad.write_text("detection:\n  detector: centerface\n")
    with pytest.raises(ConfigError, match=r"detection\.detector"):
        load_redact_config(bad)


def test_either_detector_can_be_chosen(tmp_path: Path) -> None:
    path = tmp_path / "redact.yaml"
    for kind in ("yunet", "retinaface"):
        path.write_text(f"detection:\n  detector: {kind}\n")
        assert load_redact_config(path).detection.detector == kind
