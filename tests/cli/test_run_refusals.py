"""``run`` refuses bad options and bad paths before loading anything, and a refused run creates nothing.

The console script runs with an empty model cache: had it loaded (and so built) a model, the cache would not
be empty afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from bad_input_workspace import make_clip
from support import STREAMPROC, free_port


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_clip(tmp_path / "clip.mp4", faststart=True)
    (tmp_path / "wl").mkdir()
    (tmp_path / "wl" / "watchlist.sqlite").write_bytes(b"")  # enough for the checks that only look
    (tmp_path / "cache").mkdir()
    (tmp_path / "run.yaml").write_text(
        "sources: [{id: cam1, url: clip.mp4}]\n"
        f"watchlist: {{path: {tmp_path / 'srv' / 'watchlist'}}}\n"  # like configs/file.yaml: not on this host
        f"events: {{endpoint: 'tcp://127.0.0.1:{free_port()}'}}\n"
        "metrics: {port: null}\n"
    )
    return tmp_path


def run(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMPROC_CACHE_DIR": str(work / "cache"), "COLUMNS": "200"}
    return subprocess.run(
        [STREAMPROC, "run", "run.yaml", *args], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--metrics-port", "70000"], "--metrics-port 70000: metrics.port: Input should be less than or equal to"),
        (["--metrics-port", "-5"], "--metrics-port -5: metrics.port"),
        (["--watchlist", "wl-typo"], "watchlist wl-typo does not exist; create it or enrol a subject first"),
        ([], "/srv/watchlist does not exist"),  # the config's own path: never created for the audit log
        (["--watchlist", "wl", "--source", "nope.mp4"], "sources.0.url: nope.mp4: no such file"),
        (["--watchlist", "wl", "--source", "run.yaml"], "sources.0.url: run.yaml: not a video file"),
        (["--watchlist", "wl", "--operator", " "], "--operator"),
    ],
)
def test_refused_before_loading_and_nothing_created(work: Path, args: list[str], says: str) -> None:
    before = tree(work)
    done = run(work, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.splitlines()[0]] and done.stderr.startswith("error: ")
    assert says in done.stderr
    assert tree(work) == before  # no watchlist directory, audit key or log, and an empty model cache


def test_a_port_in_use_is_refused_before_anything_starts(work: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = tree(work)
        done = run(work, "--watchlist", "wl", "--metrics-port", str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: metrics.port: cannot bind 127.0.0.1:{port}: Address already in use"
    assert tree(work) == before


def test_dry_run_checks_everything_and_opens_nothing(work: Path) -> None:
    with socket.socket() as busy:  # a dry run binds nothing, so a busy port is not its business
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        before = tree(work)
        done = run(work, "--watchlist", "wl", "--dry-run", "--metrics-port", str(busy.getsockname()[1]))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout and "nothing started (--dry-run)" in done.stdout
    assert tree(work) == before
    refused = run(work, "--dry-run", "--metrics-port", "70000")
    assert refused.returncode == 2 and "metrics.port" in refused.stderr
