"""Calibration files: distance thresholds tied to a measured false-match rate for one exact model.

A threshold means nothing without the model it was measured for and the data it was measured on, so the
file carries both, and :func:`load_calibration` refuses a file made for another model. Thresholds are in
the embedder's distance unit (L2 for dlib, 1 - cos for cosine models): a comparison is a candidate when
``distance <= threshold``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from streamproc.errors import ConfigError
from streamproc.fsutil import atomic_write_bytes
from streamproc.types import EmbedderIdentity, Metric

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and the false-match rate measured at it, with its 95% upper bound."""

    fmr_target: float
    distance_threshold: float
    impostor_accepted: int
    n_impostor: int
    fmr_upper95: float
    tar: float
    n_genuine: int


@dataclass(frozen=True)
class Calibration:
    embedder: str
    model_sha256: str
    metric: Metric
    data: str
    created: str
    command: str
    points: tuple[OperatingPoint, ...]
    notes: tuple[str, ...] = field(default=())

    def threshold_for(self, fmr: float) -> OperatingPoint:
        """The operating point whose target FMR is ``fmr`` (exact match of a calibrated point)."""
        for point in self.points:
            if abs(point.fmr_target - fmr) <= fmr * 1e-9:
                return point
        have = ", ".join(f"{p.fmr_target:g}" for p in self.points)
        raise ConfigError(f"no calibrated threshold for FMR {fmr:g} (this file has {have})")


@dataclass(frozen=True)
class Threshold:
    """The distance threshold in force and where it came from."""

    distance: float
    calibration: Calibration | None
    source: str
    fmr_target: float | None

    @property
    def uncalibrated(self) -> bool:
        return self.calibration is None


def similarity_to_distance(threshold: float, metric: Metric) -> float:
    """Similarity thresholds (higher = alike) as distances: -d for L2, cos = 1 - d for cosine."""
    return -threshold if metric == "l2" else 1.0 - threshold


def save_calibration(calibration: Calibration, path: Path) -> None:
    body = {"schema_version": SCHEMA_VERSION, **asdict(calibration)}
    atomic_write_bytes(path, (json.dumps(body, indent=2) + "\n").encode())


def load_calibration(path: Path, embedder: EmbedderIdentity | None = None) -> Calibration:
    """Read a calibration file; with ``embedder``, refuse one measured for another model."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.pop("schema_version") != SCHEMA_VERSION:
            raise ValueError("unsupported schema_version")
        points = tuple(OperatingPoint(**p) for p in raw.pop("points"))
        notes = tuple(raw.pop("notes", ()))
        calibration = Calibration(points=points, notes=notes, **raw)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"calibration file {path} is unreadable: {err}") from None
    if embedder is not None and (
        calibration.model_sha256 != embedder.model_sha256 or calibration.embedder != embedder.kind
    ):
        raise ConfigError(
            f"calibration {path} was measured for {calibration.embedder} model {calibration.model_sha256[:12]}, "
            f"not the configured {embedder.kind} model {embedder.model_sha256[:12]}; calibrate this model"
        )
    return calibration


def shipped_calibration(embedder: EmbedderIdentity) -> tuple[Calibration, str] | None:
    """The calibration file shipped in the package for this exact model, with its name, if any."""
    import importlib.resources

    name = f"{embedder.kind}-v1.json"
    resource = importlib.resources.files("streamproc") / "data" / "calibration" / name
    if not resource.is_file():
        return None
    with importlib.resources.as_file(resource) as path:
        raw = load_calibration(path)
    if raw.model_sha256 != embedder.model_sha256 or raw.embedder != embedder.kind:
        return None
    return raw, name
