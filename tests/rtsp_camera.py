"""A live RTSP camera for tests: ``tests/rtsp_server.py`` (GStreamer, system Python) as a killable subprocess."""

from __future__ import annotations

import select
import subprocess
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
PACKAGES = "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-{base,good,ugly,bad}"


class RtspServer:
    """``tests/rtsp_server.py`` as a subprocess that can crash and come back on the same port."""

    def __init__(self, port: int) -> None:
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self._port = port
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), "--port", str(self._port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._proc = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.kill()
            pytest.fail(f"RTSP server did not start within {timeout:g} s: {line.strip() or 'no output'}")

    def kill(self) -> None:
        """SIGKILL: the connection drops without an RTSP TEARDOWN, as when a camera loses power."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
