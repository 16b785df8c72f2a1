"""Usage mistakes, as the console script reports them: one line, every missing option at once, plain flags."""

from __future__ import annotations

import os
import subprocess

from support import STREAMPROC


def streamproc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    return subprocess.run([STREAMPROC, *args], capture_output=True, text=True, env=env, timeout=120)


def test_every_missing_required_option_is_named_in_one_line() -> None:
    done = streamproc("watchlist", "enroll", "--watchlist", "wl", "--name", "N")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: missing required: --subject-id, --reason, --operator, --legal-basis, IMAGES "
        "(see 'streamproc watchlist enroll --help')"
    ]


def test_bad_values_unknown_options_and_commands_are_one_line() -> None:
    for args, fragment in [
        (["run", "x.yaml", "--metrics-port", "lots"], "Invalid value for '--metrics-port'"),
        (["validate", "x.yaml", "--frobnicate"], "No such option: --frobnicate"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["events", "tail", "tcp://127.0.0.1:9", "--count", "0"], "'--count'"),
    ]:
        done = streamproc(*args)
        assert done.returncode == 2, args
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_help_shows_flags_without_a_value() -> None:
    done = streamproc("review", "decide", "--help")
    assert done.returncode == 0
    flags = [line for line in done.stdout.splitlines() if "--confirm" in line or "--reject" in line]
    assert flags and not any("<bool>" in line for line in flags), flags
    assert "<str>" in done.stdout  # options that take a value still say what
