"""Calibration files: distance thresholds tied to a measured false-match rate for one exact model.

A threshold means nothing without the model it was measured for and the data it was measured on, so the
file carries both, and :func:`load_calibration` refuses a file made for another model, or measured on faces
found and aligned by another detector (its landmarks move the chips, so the scores and their false-match
rate move too). Thresholds are in
the embedder's distance unit (L2 for dlib, 1 - cos for cosine models): a comparison is a candidate when
``distance <= threshold``.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from streamproc.errors import ConfigError
from streamproc.fsutil import atomic_write_bytes
from streamproc.search.fairscore import FairScoreMap
from streamproc.types import EmbedderIdentity, Metric

SCHEMA_VERSION = 1
FAIR_SCHEMA_VERSION = 2  # written only when the file carries a fair score map; version 1 files still load


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
class TrackRow:
    """Impostor tracks searched against random galleries of ``gallery_size`` persons, and how many flagged.

    ``tracks`` of ``persons`` never-enrolled people (one person per track) ran through the real k-of-n
    policy; ``flagged`` of them flagged someone; ``upper95`` is the Clopper-Pearson 95% upper bound on
    ``rate``. ``shot_fpir`` is the per-shot rank-1 false-match rate on the same shots and
    ``independent_rate`` the P(>= k of n) it would predict if shots were independent (for comparison only).
    """

    gallery_size: int
    tracks: int
    persons: int
    flagged: int
    rate: float
    upper95: float
    shot_fpir: float
    independent_rate: float


@dataclass(frozen=True)
class TrackFalseFlags:
    """Per-track false-flag rates of the k-of-n rule at one operating point (``fmr_target``).

    Measured by cross-fitting: each track's person was left out of the calibration that set its threshold
    (the same per-comparison FMR on the other persons; ``fold_thresholds``, distances), so the section
    speaks for the operating point, whose own threshold is ``distance_threshold``.
    """

    fmr_target: float
    distance_threshold: float
    k: int
    n: int
    fold_thresholds: tuple[float, ...]
    data: str
    rows: tuple[TrackRow, ...]


@dataclass(frozen=True)
class TrackRate:
    """Predicted chance that one track of a never-enrolled person is flagged, at one gallery size.

    ``rate`` is the value to plan with (the per-track FPIR): the measured rate, or its 95% upper bound
    where the measurement saw no flag (``bound_used``); ``upper95`` the 95% upper bound, carried the same
    way. ``method``: ``measured`` (a measured gallery size), ``interpolated`` (log-log between two) or
    ``extrapolated`` (proportional to gallery size beyond the measured range).
    """

    gallery_size: int
    rate: float
    upper95: float
    method: Literal["measured", "interpolated", "extrapolated"]
    bound_used: bool
    k: int
    n: int
    fmr_target: float


def _row_values(row: TrackRow) -> tuple[float, float, bool]:
    """(rate, upper95, bound_used): a row with no flag plans with its upper bound, never with 0."""
    if row.flagged == 0:
        return row.upper95, row.upper95, True
    return row.rate, row.upper95, False


def _loglog(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))


def rate_at_gallery_size(section: TrackFalseFlags, gallery_size: int) -> TrackRate:
    """Per-track false-flag rate of ``section`` at ``gallery_size``; see :meth:`Calibration.track_false_flag_rate`."""
    if gallery_size < 0:
        raise ValueError(f"gallery_size must be >= 0, got {gallery_size}")
    rows = sorted(section.rows, key=lambda r: r.gallery_size)
    if not rows:
        raise ValueError("the track section has no measured rows")

    def made(
        rate: float, upper: float, method: Literal["measured", "interpolated", "extrapolated"], bound: bool
    ) -> TrackRate:
        return TrackRate(
            gallery_size, min(rate, 1.0), min(upper, 1.0), method, bound, section.k, section.n, section.fmr_target
        )

    for row in rows:
        if row.gallery_size == gallery_size:
            rate, upper, bound = _row_values(row)
            return made(rate, upper, "measured", bound)
    lo, hi = rows[0], rows[-1]
    if gallery_size < lo.gallery_size or gallery_size > hi.gallery_size:
        # Small rates grow about linearly with the gallery (each enrolled person is one more chance).
        edge = lo if gallery_size < lo.gallery_size else hi
        rate, upper, bound = _row_values(edge)
        scale = gallery_size / edge.gallery_size
        return made(rate * scale, upper * scale, "extrapolated", bound)
    for a, b in itertools.pairwise(rows):
        if a.gallery_size < gallery_size < b.gallery_size:
            ra, ua, ba = _row_values(a)
            rb, ub, bb = _row_values(b)
            args = (gallery_size, a.gallery_size, b.gallery_size)
            return made(_loglog(*args, ra, rb), _loglog(*args, ua, ub), "interpolated", ba or bb)
    raise AssertionError("unreachable: gallery_size is within the measured range")


def predicted_false_alerts_per_hour(tracks_per_s: float, rate: float) -> float:
    """False alerts per hour on one stream: new tracks of never-enrolled people per second x 3600 x per-track rate.

    Counts every track as a non-enrolled person, which on a street is nearly all of them; it is therefore
    an upper estimate when enrolled people do pass.
    """
    if not (math.isfinite(tracks_per_s) and tracks_per_s >= 0.0):
        raise ValueError(f"tracks_per_s must be finite and >= 0, got {tracks_per_s}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a probability, got {rate}")
    return tracks_per_s * 3600.0 * rate


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
    track_false_flags: tuple[TrackFalseFlags, ...] = field(default=())
    fair_map: FairScoreMap | None = None  # see streamproc.search.fairscore; thresholds then apply to its distances
    # The detector whose boxes and landmarks made the chips. Files written before this field existed were all
    # measured with RetinaFace, the only detector then.
    detector: str = "retinaface"

    def track_false_flag_rate(self, gallery_size: int, k: int, n: int, fmr_target: float) -> TrackRate | None:
        """Per-track false-flag rate (per-track FPIR) of the k-of-n rule at ``fmr_target`` for ``gallery_size``.

        Log-log interpolation between measured gallery sizes, proportional to gallery size outside them
        (capped at 1), the 95% upper bound where a measured size saw no flag. None when this file has no
        track measurement for this k, n and operating point: the caller must then say "unknown", not 0.
        """
        for section in self.track_false_flags:
            if section.k == k and section.n == n and abs(section.fmr_target - fmr_target) <= fmr_target * 1e-9:
                return rate_at_gallery_size(section, gallery_size)
        return None

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

    @property
    def fair_map(self) -> FairScoreMap | None:
        """The calibration's fair score map; when present, ``distance`` applies to its calibrated distances."""
        return None if self.calibration is None else self.calibration.fair_map

    def track_false_flag_rate(self, gallery_size: int, k: int, n: int) -> TrackRate | None:
        """:meth:`Calibration.track_false_flag_rate` at this threshold's operating point; None if uncalibrated."""
        if self.calibration is None or self.fmr_target is None:
            return None
        return self.calibration.track_false_flag_rate(gallery_size, k, n, self.fmr_target)


def similarity_to_distance(threshold: float, metric: Metric) -> float:
    """Similarity thresholds (higher = alike) as distances: -d for L2, cos = 1 - d for cosine."""
    return -threshold if metric == "l2" else 1.0 - threshold


def save_calibration(calibration: Calibration, path: Path) -> None:
    plain = replace(calibration, fair_map=None)
    body = {"schema_version": SCHEMA_VERSION, **asdict(plain)}
    del body["fair_map"]
    if calibration.fair_map is not None:
        body["schema_version"] = FAIR_SCHEMA_VERSION
    text = json.dumps(body, indent=2)
    if calibration.fair_map is not None:  # its tables one line per key: ~45k numbers, not one line each
        tables = calibration.fair_map.to_dict()
        lines = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in tables.items())
        text = text[:-2] + ',\n  "fair_map": {\n' + lines + "\n  }\n}"
    atomic_write_bytes(path, (text + "\n").encode())


def load_calibration(path: Path, embedder: EmbedderIdentity | None = None, detector: str | None = None) -> Calibration:
    """Read a calibration file; with ``embedder`` / ``detector``, refuse one measured for another model /
    on another detector's chips."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.pop("schema_version") not in (SCHEMA_VERSION, FAIR_SCHEMA_VERSION):
            raise ValueError("unsupported schema_version")
        fair = raw.pop("fair_map", None)
        fair_map = None if fair is None else FairScoreMap.from_dict(fair)
        points = tuple(OperatingPoint(**p) for p in raw.pop("points"))
        notes = tuple(raw.pop("notes", ()))
        tracks = tuple(_track_section(t) for t in raw.pop("track_false_flags", ()))
        calibration = Calibration(points=points, notes=notes, track_false_flags=tracks, fair_map=fair_map, **raw)
        if fair_map is not None and fair_map.metric != calibration.metric:
            raise ValueError(f"fair map metric {fair_map.metric} differs from the file's {calibration.metric}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"calibration file {path} is unreadable: {err}") from None
    if embedder is not None and (
        calibration.model_sha256 != embedder.model_sha256 or calibration.embedder != embedder.kind
    ):
        raise ConfigError(
            f"calibration {path} was measured for {calibration.embedder} model {calibration.model_sha256[:12]}, "
            f"not the configured {embedder.kind} model {embedder.model_sha256[:12]}; calibrate this model"
        )
    if detector is not None:
        check_detector(calibration, detector, str(path))
    return calibration


def _track_section(raw: dict[str, Any]) -> TrackFalseFlags:
    rows = tuple(TrackRow(**r) for r in raw.pop("rows"))
    folds = tuple(float(t) for t in raw.pop("fold_thresholds"))
    return TrackFalseFlags(rows=rows, fold_thresholds=folds, **raw)


def check_detector(calibration: Calibration, detector: str, source: str) -> None:
    """Refuse thresholds measured on another detector's chips: their false-match rate was never measured."""
    if calibration.detector != detector:
        raise ConfigError(
            f"calibration {source} was measured on faces found and aligned by the {calibration.detector} detector, "
            f"not the configured {detector}: its false-match rates do not hold; measure one with `streamproc "
            "evaluate verification --all-pairs --calibration-out FILE` under this config and set policy.calibration"
        )


def shipped_calibration(embedder: EmbedderIdentity, detector: str) -> tuple[Calibration, str] | None:
    """The calibration file shipped in the package for this exact model, with its name, if any.

    A shipped file for this model measured with another ``detector`` is refused (ConfigError), not skipped:
    falling back to "no calibration" would hide why.
    """
    import importlib.resources

    name = f"{embedder.kind}-v1.json"
    resource = importlib.resources.files("streamproc") / "data" / "calibration" / name
    if not resource.is_file():
        return None
    with importlib.resources.as_file(resource) as path:
        raw = load_calibration(path)
    if raw.model_sha256 != embedder.model_sha256 or raw.embedder != embedder.kind:
        return None
    check_detector(raw, detector, f"{name} (shipped)")
    return raw, name
