"""A README-only user can run what CI runs: the README names every system package .ci/run installs, and a test
run that skipped tests for missing ones ends with one line naming them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import conftest
from system_parts import apt_packages, pytest_terminal_summary

ROOT = Path(__file__).resolve().parents[1]


def _ci_packages() -> list[str]:
    """Every package .ci/run installs with apt-get (bash arrays and brace expansion included)."""
    text = (ROOT / ".ci" / "run").read_text()
    found = [*apt_packages(" ".join(re.findall(r"apt-get install -y -q (\w[\w.-]*) ", text)))]
    array = re.search(r"gst=\(([^)]*)\)", text)
    assert array is not None, "the GStreamer package array moved; update this test"
    found += apt_packages(array.group(1))
    return found


def test_brace_expansion_and_option_skipping() -> None:
    assert apt_packages("-y prometheus gstreamer1.0-plugins-{base,good} python3-gi") == [
        "prometheus",
        "gstreamer1.0-plugins-base",
        "gstreamer1.0-plugins-good",
        "python3-gi",
    ]


def test_the_readme_test_section_installs_what_ci_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "apt-get install" in line]
    assert lines, "README.md has no apt-get line for the test suite's system packages"
    listed = {p for line in lines for p in apt_packages(line.split("apt-get install", 1)[1])}
    missing = [p for p in _ci_packages() if p not in listed]
    assert not missing, f"README.md does not install {missing} (.ci/run does)"


def test_a_run_with_skips_for_system_packages_ends_with_the_apt_line(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_a():\n    pytest.skip('promtool not on PATH (apt-get install -y prometheus); not checked')\n"
        "def test_b():\n    pytest.skip('RTSP (apt-get install python3-gi gstreamer1.0-plugins-{base,ugly}): no')\n"
        "def test_c():\n    pytest.skip('needs ../shared')\n"
        "def test_d():\n    pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "system_parts", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert vars(conftest)["pytest_terminal_summary"] is pytest_terminal_summary  # what `make test` runs with
    hint = [line for line in done.stdout.splitlines() if "missing system packages" in line]
    assert hint == [
        "2 test(s) skipped for missing system packages; to run them as CI does (.ci/run): "
        "sudo apt-get install -y prometheus python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-ugly"
    ]
