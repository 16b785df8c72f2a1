"""User mistakes on every command: exit 2 (or the documented code), one ``error: …`` line, nothing written.

Each case runs the real console script in a workspace of prepared inputs (a tiny real clip, photos with none,
one and two faces, a real watchlist and event journal, broken and empty files, directories where files belong
and the reverse) and compares a snapshot of the workspace before and after: no file or directory may be
created, changed or removed by a refused command. Refusals must come before any model is loaded, so most cases
take one process start; the few that need a face detector to know the photo is wrong say so (``loads``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_input_cases import CASES, Case
from bad_input_workspace import Workspace, make_workspace
from support import STREAMPROC

SENTINELS = (Path("/srv/streamproc"),)
"""Paths the shipped example configs name: a refused command must not create them."""


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def _database(path: Path) -> str:
    """A SQLite database's content (its SQL dump, read-only): what its -wal and -shm files hold is included."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()
    finally:
        db.close()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` and its state; what a refusal must leave alone.

    Files: size, mtime and mode; SQLite databases: their content (a reader may fold the WAL into the file
    without changing a row), so their ``-wal`` and ``-shm`` files are left out. A directory's own mtime is
    left out too (a lock file made and removed again leaves no trace), and so is ``tmp/``, the commands'
    TMPDIR (libraries keep scratch files there).
    """
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        if Path(directory) == root:
            dirs[:] = [d for d in dirs if d != "tmp"]
        for name in [*dirs, *files]:
            path = Path(directory, name)
            if name.endswith(("-shm", "-wal")):
                continue
            st = path.lstat()
            if path.is_dir() and not path.is_symlink():
                found[str(path.relative_to(root))] = ("dir", st.st_mode)
            elif name.endswith(".sqlite"):
                found[str(path.relative_to(root))] = ("db", _database(path), st.st_mode)
            else:
                found[str(path.relative_to(root))] = ("file", st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def run_streamproc(args: list[str], cwd: Path, stdin: str = "") -> Outcome:
    env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(cwd / "tmp"), "NO_COLOR": "1"}
    done = subprocess.run(
        [STREAMPROC, *args], cwd=cwd, env=env, capture_output=True, text=True, input=stdin, timeout=300
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    with socket.socket() as busy:  # a port in use for the whole module
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield make_workspace(tmp_path_factory.mktemp("bad-input"), busy.getsockname()[1])


def check_refusal(case: Case, ws: Workspace) -> None:
    values = {"busy": ws.busy_port, "free": ws.free_port, "event": ws.event_id}
    args = [a.format(**values) for a in case.args]
    fragment = case.fragment.format(**values)
    before = snapshot(ws.root)
    sentinels = [p.exists() for p in SENTINELS]
    got = run_streamproc(args, ws.root, case.stdin)
    shown = f"streamproc {' '.join(args)}\nexit {got.code}\nstdout: {got.stdout}\nstderr: {got.stderr}"
    assert "Traceback" not in got.stderr, shown
    assert got.code == case.code, shown
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(case.prefix)]
    assert len(errors) == 1, shown
    if not case.more_lines:
        assert lines == errors, shown
    assert fragment.lower() in errors[0].lower(), shown
    assert snapshot(ws.root) == before, f"{shown}\nthe workspace changed"
    assert [p.exists() for p in SENTINELS] == sentinels, f"{shown}\ncreated {SENTINELS}"


@pytest.mark.parametrize("case", [c for c in CASES if not c.loads], ids=lambda c: c.id)
def test_refused_before_anything_is_loaded(case: Case, workspace: Workspace) -> None:
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode: unreadable-file cases need another user")
    check_refusal(case, workspace)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.loads], ids=lambda c: c.id)
def test_refused_after_looking_at_the_faces(case: Case, workspace: Workspace) -> None:
    check_refusal(case, workspace)


def test_the_table_covers_every_command() -> None:
    commands = {" ".join(a for a in c.args[:2] if not a.startswith("-")).split(" ")[0] for c in CASES}
    top = {
        "validate", "run", "watchlist", "events", "keys", "identify", "audit", "calibrate",
        "evaluate", "review", "models", "demo", "config",
    }  # fmt: skip
    assert top <= commands, top - commands
    assert len(CASES) >= 60
