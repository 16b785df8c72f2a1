"""A one-line description of this machine, recorded with every measured number."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_description() -> str:
    """e.g. ``2 cores, AMD EPYC`` (CPU model from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""  # not Linux: keep platform's answer
    for line in text.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}"
