"""Checks and wording shared by the config loaders: ZeroMQ addresses, non-blank strings, unknown keys, YAML errors.

Kept apart from :mod:`streamproc.config` so the sections there stay declarations.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel

if TYPE_CHECKING:  # a type only: yaml is imported where a file is read (13 ms a command without --config)
    import yaml

_TCP = re.compile(r"^tcp://(?:[^;\s]+;)?(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\*|\d{1,5})$")


def zmq_endpoint(value: str) -> str:
    """``value`` if it is a ZeroMQ address a socket can bind or connect to; ValueError saying what one looks like."""
    if value.startswith(("ipc://", "inproc://")) and len(value.split("://", 1)[1].strip()) > 0:
        return value
    match = _TCP.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a ZeroMQ address: use tcp://HOST:PORT (PORT 1-65535, or * for any), ipc://PATH "
            "or inproc://NAME"
        )
    port = match["port"]
    if port != "*" and not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range 1-65535 (or * for any free port)")
    return value


def non_blank(value: str) -> str:
    """``value`` unless it is empty or only whitespace (an unset shell variable, say)."""
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


ZmqEndpoint = Annotated[str, AfterValidator(zmq_endpoint)]
NonBlank = Annotated[str, AfterValidator(non_blank)]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config section class inside an annotation (``X``, ``X | None``, ``list[X]``, ``Annotated[X, …]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def known_keys(model: type[BaseModel], parents: tuple[str | int, ...]) -> list[str]:
    """The keys the section at ``parents`` (a key path, list indexes included) accepts; [] when unknown."""
    current: type[BaseModel] | None = model
    for part in parents:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


def unknown_key_message(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    """``unknown key; did you mean 'x'?`` (the closest key the section accepts), or the keys it accepts."""
    keys = known_keys(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; this section takes {', '.join(keys)}" if keys else "unknown key"


def yaml_error(source: str, err: yaml.YAMLError) -> str:
    """``FILE:LINE:COLUMN: not valid YAML: <the problem in one sentence>``."""
    mark = getattr(err, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    sentence = f"{problem} ({context})" if context else problem
    return f"{where}: not valid YAML: {' '.join(str(sentence).split())}"
