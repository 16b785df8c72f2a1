"""Thresholds as a false-alarm budget: FPIR at a gallery size, calibrated on impostor searches.

A per-comparison FMR says little about a watchlist: a bystander is compared with every enrolled person, so
the chance that *someone* in a gallery of N scores above the threshold (the false-positive identification
rate, FPIR) grows with N. Here the threshold is set on simulated searches instead: each calibration image
is searched against a seeded random gallery of N *other* persons (one image each), and its top-1 similarity
is one non-mated top-1 score. When the calibration set has fewer than N other persons the gallery is drawn
with replacement (a bootstrap of the impostor distribution), which keeps each draw's chance of exceeding
the threshold right but makes the searches less independent than the bound assumes; callers say so.

The threshold is :func:`~streamproc.eval.metrics.threshold_at_fmr` of those scores (at most
``floor(target * n)`` reach it) and the evidence for it is the exact 95% Clopper-Pearson upper bound on
FPIR given the count: with too few searches no count can demonstrate a small target, and that is reported
rather than hidden. Similarities as in :mod:`streamproc.eval.metrics` (higher = alike).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import StreamprocError
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.metrics import FloatArray, threshold_at_fmr
from streamproc.types import Metric

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


# --------------------------------------------------------------------------- threshold and bound


@dataclass(frozen=True)
class FpirPoint:
    """A similarity threshold for a target FPIR and the count behind it.

    ``false_alarms``: non-mated top-1 scores ``>= threshold`` among ``n_searches``; ``fpir_upper95``: the
    upper end of the two-sided 95% Clopper-Pearson interval for that count. ``demonstrated`` is whether
    that bound is within the target: the only honest reading of "FPIR <= target".
    """

    target_fpir: float
    threshold: float
    false_alarms: int
    n_searches: int
    fpir_upper95: float

    @property
    def demonstrated(self) -> bool:
        return self.fpir_upper95 <= self.target_fpir


def min_searches(target: float, confidence: float = 0.95) -> int:
    """Fewest searches whose bound can reach ``target`` at all (zero false alarms: ``1 - tail**(1/n)``)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    tail = (1.0 - confidence) / 2.0
    n = math.ceil(math.log(tail) / math.log1p(-target))
    while clopper_pearson(0, n, confidence)[1] > target:  # guard the float edge of the closed form
        n += 1
    return n


def fpir_point(nonmated_top1: FloatArray, target: float) -> FpirPoint:
    """The most permissive threshold with at most ``floor(target * n)`` non-mated top-1 scores at or above it."""
    scores = np.asarray(nonmated_top1)
    t = threshold_at_fmr(scores, target)
    k = int(np.count_nonzero(scores >= np.float64(t)))
    return FpirPoint(target, t, k, int(scores.size), clopper_pearson(k, int(scores.size))[1])


def sufficiency_message(point: FpirPoint) -> str:
    """A plain sentence on whether the searches can support the target, with the number needed if not."""
    need = min_searches(point.target_fpir)
    bound = f"{point.fpir_upper95:.3%}"
    if point.demonstrated:
        return (
            f"FPIR <= {point.target_fpir:g} is supported: {point.false_alarms} of {point.n_searches} non-mated "
            f"searches reach the threshold; 95% upper bound {bound}"
        )
    return (
        f"NOT DEMONSTRATED: {point.n_searches} non-mated searches cannot show FPIR <= {point.target_fpir:g} "
        f"({point.false_alarms} reach the threshold; the 95% upper bound is {bound}); even with zero false "
        f"alarms it takes at least {need} searches"
    )


# --------------------------------------------------------------------------- simulated searches


def _unit(x: NDArray[Any], metric: Metric) -> NDArray[np.float64]:
    v = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float64)
    return v


def similarity_matrix(a: NDArray[Any], b: NDArray[Any], metric: Metric) -> NDArray[np.float64]:
    """``(len(a), len(b))`` similarities: cosine of the rows, or minus their Euclidean distance."""
    x, y = _unit(a, metric), _unit(b, metric)
    if metric == "cosine":
        return np.asarray(x @ y.T, dtype=np.float64)
    sq = (x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.asarray(-np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


def nonmated_top1(
    embeddings: NDArray[Any],
    persons: Sequence[str],
    gallery_size: int,
    metric: Metric,
    seed: int,
    block: int = 512,
) -> tuple[NDArray[np.float64], bool]:
    """Top-1 similarity of each image searched against its own random gallery of ``gallery_size`` others.

    ``embeddings`` (n, d), ``persons`` n labels. Each probe's gallery holds ``gallery_size`` persons other
    than its own, one random image of each; drawn without replacement when there are enough other persons,
    else with replacement (returned flag True). Seeded, so a calibration can be repeated exactly.
    """
    emb = np.asarray(embeddings)
    n = emb.shape[0]
    if len(persons) != n:
        raise ValueError(f"persons has {len(persons)} labels for {n} embeddings")
    if gallery_size < 1:
        raise ValueError("gallery_size must be at least 1")
    names, codes_raw = np.unique(np.asarray(persons), return_inverse=True)
    codes = codes_raw.reshape(-1).astype(np.int64)
    n_persons = names.size
    if n_persons < 2:
        raise ValueError("need at least two persons to draw impostor galleries")
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_persons)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    replace = n_persons - 1 < gallery_size
    rng = np.random.default_rng(seed)
    top1 = np.empty(n, dtype=np.float64)
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        picks = np.empty((r1 - r0, gallery_size), dtype=np.int64)
        for row, i in enumerate(range(r0, r1)):
            # Draw among the other persons: indices 0..P-2, shifted past the probe's own code.
            others = rng.choice(n_persons - 1, size=gallery_size, replace=replace)
            others += others >= codes[i]
            picks[row] = order[starts[others] + rng.integers(0, counts[others])]
        sims = similarity_matrix(emb[r0:r1], emb, metric)
        top1[r0:r1] = np.take_along_axis(sims, picks, axis=1).max(axis=1)
    return top1, replace


def threshold_at_tar(mated_correct: NDArray[np.bool_], mated_score: FloatArray, tar: float) -> float | None:
    """Strictest threshold at which ``tar`` of mated probes have the right top-1 at or above it; None if unreachable.

    Descriptive: read off the probes themselves, it says what the model can do, not what to deploy.
    """
    correct = np.asarray(mated_correct, dtype=np.bool_)
    scores = np.asarray(mated_score, dtype=np.float64)
    need = math.ceil(tar * correct.size - 1e-9)
    good = np.sort(scores[correct & (scores > -np.inf)])[::-1]
    if need == 0:
        return math.inf
    if good.size < need:
        return None
    return float(good[need - 1])


# --------------------------------------------------------------------------- the bench split


@dataclass(frozen=True)
class BenchSplit:
    """Three person-disjoint sets: ``(person, path)`` lists. Enrolled persons are in the gallery and probes."""

    calibration: list[tuple[str, Path]]
    gallery: list[tuple[str, Path]]
    enrolled_probes: list[tuple[str, Path]]
    nonenrolled_probes: list[tuple[str, Path]]


def _photos(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _by_hash(items: Sequence[str], seed: int) -> list[str]:
    return sorted(items, key=lambda s: hashlib.sha256(f"{seed}/{s}".encode()).digest())


def split_open_set(
    lfw_dir: Path, utk_dir: Path | None, seed: int = 0, gallery_size: int = 2500, n_enrolled: int = 300
) -> BenchSplit:
    """Person-disjoint calibration set, gallery and probes for the open-set replay.

    Enrolled: ``n_enrolled`` LFW persons with two or more photos (first photo in the gallery, second as a
    probe). Distractors (``gallery_size - n_enrolled``) come from UTKFace (each image its own person; byte
    duplicates dropped so one face is never two persons) and single-photo LFW persons in equal proportion,
    so the gallery mixes both sources. What is left is split half and half, source by source, between the
    calibration set and the non-enrolled probes (every photo of each), so calibration sees the same mix.
    """
    lfw: dict[str, list[Path]] = {}
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        photos = _photos(person)
        if photos:
            lfw[f"lfw:{person.name}"] = photos
    utk: dict[str, list[Path]] = {}
    if utk_dir is not None:
        seen: set[bytes] = set()
        for f in _photos(utk_dir):
            digest = hashlib.sha256(f.read_bytes()).digest()
            if digest not in seen:
                seen.add(digest)
                utk[f"utk:{f.name}"] = [f]
    multi = _by_hash([p for p, photos in lfw.items() if len(photos) >= 2], seed)
    singles = _by_hash([p for p, photos in lfw.items() if len(photos) == 1], seed)
    faces = _by_hash(list(utk), seed)
    if len(multi) < n_enrolled:
        raise StreamprocError(f"{lfw_dir}: {len(multi)} persons with two photos, need {n_enrolled} to enrol")
    enrolled, rest_multi = multi[:n_enrolled], multi[n_enrolled:]
    n_distract = gallery_size - n_enrolled
    pool = len(singles) + len(faces)
    if n_distract > pool:
        raise StreamprocError(f"a gallery of {gallery_size} needs {n_distract} distractors; the data has {pool}")
    from_utk = round(n_distract * len(faces) / pool) if pool else 0
    from_utk = min(from_utk, len(faces))
    from_single = n_distract - from_utk
    distract = faces[:from_utk] + singles[:from_single]
    rest = [rest_multi, faces[from_utk:], singles[from_single:]]
    calib = [p for group in rest for p in group[0::2]]
    nonenrolled = [p for group in rest for p in group[1::2]]
    photos_of = {**lfw, **utk}
    return BenchSplit(
        calibration=[(p, f) for p in calib for f in photos_of[p]],
        gallery=[(p, photos_of[p][0]) for p in enrolled + distract],
        enrolled_probes=[(p, photos_of[p][1]) for p in enrolled],
        nonenrolled_probes=[(p, f) for p in nonenrolled for f in photos_of[p]],
    )


def person_folders(images_dir: Path) -> list[tuple[str, Path]]:
    """``(person, photo)`` for every photo of every person folder under ``images_dir``."""
    pairs = [(p.name, f) for p in sorted(d for d in images_dir.iterdir() if d.is_dir()) for f in _photos(p)]
    if not pairs:
        raise StreamprocError(f"{images_dir}: no <person>/<photo> images found")
    return pairs
