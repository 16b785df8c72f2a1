"""Random broken configs never crash ``validate`` or ``run --dry-run``, and every refusal names a key path.

Documents start from a valid config and get random mutations built from the config schema's own keys: a
value of the wrong type or a random string at any key path, an unknown key beside real ones, a missing
required key. The commands run in this process through the console entry point (``streamproc.cli.main``),
so an exception escaping it is exactly what a user would see as a traceback.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from streamproc.cli import main
from streamproc.config import PipelineConfig

EXAMPLES = 150
TOP = sorted(PipelineConfig.model_fields)


def _section(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_section, get_args(annotation)) if m is not None), None)


def key_paths(model: type[BaseModel], prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path of the schema (list sections through their first item), sections included."""
    paths: list[tuple[str | int, ...]] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        paths.append(path)
        inner = _section(field.annotation)
        if inner is not None:
            is_list = "list" in str(field.annotation)
            paths += key_paths(inner, (*path, 0) if is_list else path)
    return paths


PATHS = key_paths(PipelineConfig)
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.just(""),
    st.just("   "),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=2),
)


def _base() -> dict[str, Any]:
    return {"sources": [{"id": "cam1", "url": "clip.mp4"}], "watchlist": {"path": "wl"}, "metrics": {"port": None}}


def _put(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set ``path`` to ``value``, making the sections on the way; skipped where a mutation made a value there."""
    node: Any = doc
    for part, after in itertools.pairwise(path):
        if isinstance(part, int) and isinstance(node, list):
            while len(node) <= part:
                node.append({})
        elif isinstance(part, str) and isinstance(node, dict):
            if not isinstance(node.get(part), dict | list):
                node[part] = [] if isinstance(after, int) else {}
        else:
            return
        node = node[part]
    if isinstance(node, dict):
        node[path[-1]] = value


@st.composite
def broken_configs(draw: st.DrawFn) -> dict[str, Any]:
    doc = _base()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["wrong", "wrong", "unknown", "missing"]))
        path = draw(st.sampled_from(PATHS))
        if kind == "wrong":
            _put(doc, path, draw(WRONG))
        elif kind == "unknown":
            _put(doc, (*path[:-1], draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True))), draw(WRONG))
        else:
            doc.pop(draw(st.sampled_from(["sources", "watchlist"])), None)
    return doc


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("property")
    (root / "clip.mp4").write_bytes(b"")  # --dry-run only looks: existence is all it checks
    (root / "wl").mkdir()
    (root / "wl" / "watchlist.sqlite").write_bytes(b"")
    return root


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["streamproc", *argv])
    with pytest.raises(SystemExit) as done:  # anything else escaping main() would be a user's traceback
        main()
    code = done.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]], ids=["validate", "run-dry-run"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=broken_configs())
def test_never_a_traceback_always_a_key_path(
    command: list[str],
    doc: dict[str, Any],
    work: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = work / "random.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True))
    monkeypatch.chdir(work)
    code, err = run_main([command[0], str(config), *command[1:]], capsys, monkeypatch)
    assert code in (0, 2), err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err
        firsts = sorted({*TOP, *map(str, doc)}, key=len, reverse=True)  # schema keys, and unknown ones it names
        key_path = re.compile(r"(?:^error: |: )(?:" + "|".join(map(re.escape, firsts)) + r")(?:\.[^\s.]*)*: ")
        assert key_path.search(errors[0]) or "the file is empty" in err, err
    assert sorted(p.name for p in work.iterdir()) == ["clip.mp4", "random.yaml", "wl"]  # nothing written
