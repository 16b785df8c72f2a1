"""`streamproc review serve` as users run it: a real process on a real port; mistakes are one line, exit 2."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from desk_server import add_accounts, write_config
from support import STREAMPROC, free_port, make_event

from streamproc.config import load_pipeline_config
from streamproc.feed.journal import EventJournal


def _serve(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STREAMPROC, "review", "serve", *map(str, args)], capture_output=True, text=True, timeout=60)


def test_serve_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "events.sqlite", tmp_path / "wl")
    no_journal = _serve("--config", config)
    assert no_journal.returncode == 2 and "no event journal" in no_journal.stderr
    assert len(no_journal.stderr.strip().splitlines()) == 1
    with EventJournal(tmp_path / "events.sqlite") as j:
        j.append(make_event())
    no_accounts = _serve("--config", config)
    assert no_accounts.returncode == 2 and "review reviewers add" in no_accounts.stderr
    bad = _serve("--config", config, "--listen", "nowhere")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    add_accounts(load_pipeline_config(config))
    exposed = _serve("--config", config, "--listen", "0.0.0.0:8088", "--trusted-user-header", "X-Remote-User")
    assert exposed.returncode == 2 and "loopback" in exposed.stderr
    bad_header = _serve("--config", config, "--trusted-user-header", "X Remote: User")
    assert bad_header.returncode == 2 and "header name" in bad_header.stderr
    assert not (tmp_path / "audit" / "audit.log").exists()  # nothing logged by a refusal


def test_serve_answers_on_localhost_and_stops_on_sigint(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "events.sqlite") as j:
        j.append(make_event())
    config = write_config(tmp_path, tmp_path / "events.sqlite", tmp_path / "wl")
    add_accounts(load_pipeline_config(config))
    port = free_port()
    proc = subprocess.Popen(
        [STREAMPROC, "review", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as r:
                    assert r.status == 200 and "Sign in" in r.read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "review serve did not answer"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"review console on http://127.0.0.1:{port}/" in err
