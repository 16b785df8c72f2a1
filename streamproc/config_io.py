"""Reading a YAML config file and naming what is wrong in it: the helpers every loader shares.

Kept apart from :mod:`streamproc.config` so a loader of another file (``redact.yaml``) does not build the
pipeline's config models just to read YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from streamproc.config_checks import unknown_key_message, yaml_error
from streamproc.errors import ConfigError


def format_validation_error(
    err: ValidationError,
    source: str,
    key_lines: dict[tuple[str | int, ...], int] | None = None,
    model: type[BaseModel] | None = None,
) -> str:
    """One line per problem, each with its dotted key path (and YAML line where known).

    An unknown key suggests the closest key of its section of ``model`` (the root config class) when given."""
    lines = []
    for item in err.errors():
        loc = tuple(item["loc"])
        if loc[:1] == ("detector",) and loc[1:2] in (("retinaface",), ("yunet",)):
            loc = loc[:1] + loc[2:]  # the detector kinds share one set of keys: name them as written in YAML
        path = ".".join(str(p) for p in loc) or "<root>"
        where = source
        if key_lines:
            # the deepest located prefix of the key path (tagged unions add a tag segment)
            for depth in range(len(loc), 0, -1):
                line = key_lines.get(tuple(p for p in loc[:depth] if p not in ("dlib-resnet", "arcface")))
                if line is not None:
                    where = f"{source}:{line}"
                    break
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = unknown_key_message(model, loc) if model is not None else "unknown key"
        lines.append(f"{where}: {path}: {message}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping (empty file: ``{}``); any read or parse problem is a one-line
    :class:`ConfigError` naming the file (and line:column for YAML syntax)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config {path}: not a text file (a YAML config is UTF-8 text)") from None
    import yaml  # here, not at the top: commands run without a config file skip its 13 ms import

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(str(path), err)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data
