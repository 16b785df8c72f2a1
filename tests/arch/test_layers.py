"""The package layers in docs/architecture.md hold: every import between packages points down.

The rule is written once, in the ``layers`` block of docs/architecture.md (top layer first; packages on one
line are peers and may not import each other). This test parses that block and every module's imports
(function-level and ``TYPE_CHECKING`` ones included, since they are real dependencies too).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streamproc"
CORE = "(core)"


def layers() -> list[list[str]]:
    """The layers block of docs/architecture.md, top first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```text layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its ```text layers block"
    return [line.split("#")[0].split() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def part_of(module: str) -> str:
    """``streamproc.vision.detect`` -> ``vision``; a top-level module (``streamproc.types``) -> core."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and not (PACKAGE / parts[1]).is_dir()):
        return CORE
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "streamproc":
                found.update(f"streamproc.{alias.name}" for alias in node.names)
            elif node.module.startswith("streamproc."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("streamproc."))
    return found


def rank() -> dict[str, int]:
    table = layers()
    return {part: len(table) - i for i, line in enumerate(table) for part in line}


def test_every_package_is_in_exactly_one_layer() -> None:
    named = [p for line in layers() for p in line]
    assert len(named) == len(set(named)), f"a package is named twice: {named}"
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages | {CORE} == set(named), "docs/architecture.md's layers and the tree disagree"


def test_every_import_points_down() -> None:
    ranks = rank()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        if source == "streamproc.__main__":
            continue  # ``python -m streamproc`` is the CLI's second entry point, not a layer
        mine = part_of(source)
        for target in imports_of(path):
            theirs = part_of(target)
            if theirs != mine and ranks[theirs] >= ranks[mine]:
                upward.append(f"{source} ({mine}) imports {target} ({theirs})")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_no_module_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_every_package_says_what_it_may_use() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) >= 2, f"{init} needs a docstring: what it does, what it may use"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("streamproc.vision", ("zmq", "prometheus_client", "hnswlib", "av")),
        ("streamproc.search", ("zmq", "prometheus_client", "av")),
        ("streamproc.feed", ("cv2", "onnxruntime", "av", "hnswlib")),
        ("streamproc.records", ("zmq", "cv2", "onnxruntime", "av")),
    ],
)
def test_importing_a_package_loads_only_what_it_needs(package: str, forbidden: tuple[str, ...]) -> None:
    """A fresh interpreter imports every module of the package; none of the forbidden libraries may load."""
    modules = [module_name(p) for p in sorted((PACKAGE / package.split(".")[1]).rglob("*.py"))]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print([m for m in {forbidden!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing {package} loads {out}"
