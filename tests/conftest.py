"""Shared fixtures: the ../shared evaluation data and the prepared default models."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from system_parts import pytest_terminal_summary  # noqa: F401 - the hook: one line naming missing system packages

if TYPE_CHECKING:
    from streamproc.config_recognition import RecognitionConfig
    from streamproc.vision.faces import FaceAnalyzer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path to ../shared; skips visibly on a clone without it, fails under CI=true."""
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {SHARED} is missing")
        pytest.skip(f"needs {SHARED} (the shared evaluation data), which this checkout lacks")
    return SHARED


@pytest.fixture(scope="session")
def default_config() -> RecognitionConfig:
    """Default recognition settings; models come from the default cache (built on first use)."""
    from streamproc.config_recognition import RecognitionConfig

    return RecognitionConfig()


@pytest.fixture(scope="session")
def analyzer(default_config: RecognitionConfig) -> FaceAnalyzer:
    from streamproc.runtime.build import build_analyzer

    return build_analyzer(default_config)


RTSP_SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_PACKAGES = "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-{base,good,ugly,bad}"

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("videotestsrc", "x264enc", "rtph264pay") if Gst.ElementFactory.find(e) is None]
assert not missing, f"missing GStreamer elements: {missing}"
"""


@pytest.fixture(scope="session")
def gst_rtsp() -> None:
    """Skips visibly without GStreamer's RTSP server; fails under CI=true, where .ci/run installs it."""
    if not Path(RTSP_SYSTEM_PYTHON).exists():
        reason = f"{RTSP_SYSTEM_PYTHON} is missing"
    else:
        probe = subprocess.run([RTSP_SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
        lines = probe.stderr.strip().splitlines()
        reason = "" if probe.returncode == 0 else (lines[-1] if lines else f"exit status {probe.returncode}")
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but GStreamer's RTSP server is unusable: {reason}")
        pytest.skip(f"needs GStreamer's RTSP server (apt-get install {RTSP_PACKAGES}): {reason}")
