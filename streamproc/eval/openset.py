"""Thresholds as a false-alarm budget: FPIR at a gallery size, calibrated on impostor searches.

A per-comparison FMR says little about a watchlist: a bystander is compared with every enrolled person, so
the chance that *someone* in a gallery of N scores above the threshold (the false-positive identification
rate, FPIR) grows with N. Here the threshold is set on simulated searches instead: each calibration image
is searched against a seeded random gallery of M *other* persons (one image each, no person twice), and its
top-1 similarity is one non-mated top-1 score.

When the calibration set has fewer than N other persons, M is all of them and the target is carried from N
to M as ``1 - (1 - target) ** (M / N)`` (:func:`scale_fpir`). If gallery persons are independent draws
from one population, a probe's FPIR at N is ``1 - E[(1 - q) ** N]`` for its per-person exceedance q, and
Jensen's inequality (``x ** (N / M)`` is convex) makes that at most ``scale_fpir(FPIR_M, M, N)``: the
threshold errs on the strict side. Drawing the gallery *with* replacement instead (what this module did
before) is biased the other way: 2,500 draws from ~1,300 persons hold only ~1,100 distinct ones, so the
simulated FPIR is about half the real one (`bench/RESULTS.md`, issue 12).

The threshold is :func:`~streamproc.eval.metrics.threshold_at_fmr` of those scores (at most
``floor(target_M * n)`` reach it) and the evidence for it is the exact 95% Clopper-Pearson upper bound on
FPIR given the count, carried to N the same way: with too few searches no count can demonstrate a small
target, and that is reported rather than hidden. Similarities as in :mod:`streamproc.eval.metrics` (higher =
alike).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
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
    """A similarity threshold for a target FPIR at a gallery size, and the count behind it.

    ``gallery_size`` (N) is the watchlist the threshold is for; ``searched_size`` (M <= N) the persons in
    each simulated search. ``false_alarms``: non-mated top-1 scores ``>= threshold`` among ``n_searches``;
    ``fpir_upper95``: the upper end of the two-sided 95% Clopper-Pearson interval for that count, carried to
    N by :func:`scale_fpir` when M < N. ``demonstrated`` is whether that bound is within the target: the
    only honest reading of "FPIR <= target".
    """

    target_fpir: float
    gallery_size: int
    searched_size: int
    threshold: float
    false_alarms: int
    n_searches: int
    fpir_upper95: float

    @property
    def demonstrated(self) -> bool:
        return self.fpir_upper95 <= self.target_fpir

    @property
    def extrapolated(self) -> bool:
        """Whether the searches had fewer persons than the gallery (the target was carried to M)."""
        return self.searched_size < self.gallery_size

    @property
    def search_target(self) -> float:
        """The FPIR the searches of ``searched_size`` were held to."""
        return scale_fpir(self.target_fpir, self.gallery_size, self.searched_size)


def scale_fpir(rate: float, from_size: int, to_size: int) -> float:
    """FPIR at ``to_size`` persons from ``rate`` at ``from_size`` as if persons were independent: ``1-(1-r)^(to/from)``.

    From a smaller gallery to a larger one this is an upper bound (see the module docstring); the other way
    it gives the per-search target that keeps the larger gallery within ``rate``.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if from_size < 1 or to_size < 1:
        raise ValueError("gallery sizes must be at least 1")
    if rate == 1.0:
        return 1.0
    return -math.expm1(to_size / from_size * math.log1p(-rate))


def min_searches(target: float, confidence: float = 0.95) -> int:
    """Fewest searches whose bound can reach ``target`` at all (zero false alarms: ``1 - tail**(1/n)``)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    tail = (1.0 - confidence) / 2.0
    n = math.ceil(math.log(tail) / math.log1p(-target))
    while clopper_pearson(0, n, confidence)[1] > target:  # guard the float edge of the closed form
        n += 1
    return n


def fpir_point(nonmated_top1: FloatArray, target: float, gallery_size: int, searched_size: int) -> FpirPoint:
    """The most permissive threshold for ``target`` at ``gallery_size``, from top-1 scores of ``searched_size``.

    At most ``floor(search_target * n)`` of the scores reach the threshold.
    """
    if searched_size > gallery_size:
        raise ValueError(f"searched {searched_size} persons for a gallery of {gallery_size}")
    scores = np.asarray(nonmated_top1)
    t = threshold_at_fmr(scores, scale_fpir(target, gallery_size, searched_size))
    k = int(np.count_nonzero(scores >= np.float64(t)))
    upper = scale_fpir(clopper_pearson(k, int(scores.size))[1], searched_size, gallery_size)
    return FpirPoint(target, gallery_size, searched_size, t, k, int(scores.size), upper)


def calibrate_fpir(
    embeddings: NDArray[Any], persons: Sequence[str], gallery_size: int, target: float, metric: Metric, seed: int
) -> FpirPoint:
    """Threshold for ``target`` FPIR at ``gallery_size`` from searches among the calibration persons.

    Each image is searched against ``min(gallery_size, other persons)`` others (:func:`nonmated_top1`), the
    target carried to that size by :func:`scale_fpir`.
    """
    others = len(set(persons)) - 1
    searched = min(gallery_size, others)
    return fpir_point(nonmated_top1(embeddings, persons, searched, metric, seed), target, gallery_size, searched)


def sufficiency_message(point: FpirPoint) -> str:
    """A plain sentence on whether the searches can support the target, with the number needed if not."""
    need = min_searches(point.search_target)
    bound = f"{point.fpir_upper95:.3%}"
    how = (
        f"each against all {point.searched_size} other calibration persons, carried to {point.gallery_size} "
        "as if persons were independent, which errs on the strict side"
        if point.extrapolated
        else f"each against {point.searched_size} other persons"
    )
    if point.demonstrated:
        return (
            f"FPIR <= {point.target_fpir:g} is supported: {point.false_alarms} of {point.n_searches} non-mated "
            f"searches ({how}) reach the threshold; 95% upper bound {bound}"
        )
    return (
        f"NOT DEMONSTRATED: {point.n_searches} non-mated searches ({how}) cannot show FPIR <= "
        f"{point.target_fpir:g} ({point.false_alarms} reach the threshold; the 95% upper bound is {bound}); even "
        f"with zero false alarms it takes at least {need} searches"
    )


@dataclass(frozen=True)
class Repeats:
    """Labels after joining persons who are, by the model's own strictest reading, one person.

    ``persons``: one label per image, joined labels sharing one; ``pairs``: the cross-label image pairs
    ``(i, j, similarity)`` at or above ``bar``, strongest first; ``joined``: labels folded into another.
    """

    persons: list[str]
    pairs: list[tuple[int, int, float]]
    bar: float
    joined: int


def merge_repeats(embeddings: NDArray[Any], persons: Sequence[str], metric: Metric, block: int = 1024) -> Repeats:
    """Join labels whose images score at or above the set's typical same-person similarity (:func:`same_person_bar`).

    Why: an FPIR calibration at 1e-3 rests on the top one or two non-mated scores of a few thousand
    searches, so one person filed under two labels (web-scraped sets hold such repeats, and exact copies)
    sets the threshold by itself, near "identical", and no true match passes. A cross-label pair more alike
    than a typical person's own photos are to each other is far beyond any calibrated impostor rate (SFace:
    FMR 1e-5 on LFW is cosine ~0.48; this bar is ~0.7), so it is taken as a labelling error, joined, and
    reported for the operator to check. Without same-person pairs (one image per person) nothing is joined.
    """
    labels = [str(p) for p in persons]
    bar = same_person_bar(embeddings, labels, metric)
    if not math.isfinite(bar):
        return Repeats(labels, [], bar, 0)
    emb = np.asarray(embeddings)
    names = np.asarray(labels)
    pairs: list[tuple[int, int, float]] = []
    for r0 in range(0, emb.shape[0], block):
        sims = similarity_matrix(emb[r0 : r0 + block], emb, metric)
        rows, cols = np.nonzero(sims >= bar)
        keep = (cols > rows + r0) & (names[rows + r0] != names[cols])
        pairs += [(int(i) + r0, int(j), float(sims[i, j])) for i, j in zip(rows[keep], cols[keep], strict=True)]
    pairs.sort(key=lambda t: -t[2])
    merged, joined = join_labels(labels, [(i, j) for i, j, _ in pairs])
    return Repeats(merged, pairs, bar, joined)


def same_person_bar(embeddings: NDArray[Any], persons: Sequence[str], metric: Metric) -> float:
    """Median over persons (with two or more images) of the median similarity among each one's own images.

    Each person counts once, so a few persons with hundreds of photos do not set it; ``inf`` without any.
    """
    emb = np.asarray(embeddings)
    names, codes = np.unique(np.asarray(persons), return_inverse=True)
    codes = codes.reshape(-1)
    medians = []
    for code in np.flatnonzero(np.bincount(codes, minlength=names.size) >= 2):
        own = emb[codes == code]
        sims = similarity_matrix(own, own, metric)
        medians.append(float(np.median(sims[np.triu_indices(own.shape[0], 1)])))
    return float(np.median(medians)) if medians else math.inf


def join_labels(labels: Sequence[str], pairs: Sequence[tuple[int, int]]) -> tuple[list[str], int]:
    """Each image's label after joining the labels of every ``(i, j)`` image pair (connected components).

    Returns the new labels (one existing label per component) and how many labels were folded into another.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    joined = 0
    for i, j in pairs:
        a, b = find(labels[i]), find(labels[j])
        if a != b:
            parent[a] = b
            joined += 1
    return [find(p) for p in labels], joined


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


def gallery_draws(persons: Sequence[str], gallery_size: int, seed: int) -> Iterator[NDArray[np.int64]]:
    """For each image in order, the indices of its simulated gallery: one random image of each of
    ``gallery_size`` random persons other than its own, no person twice. Seeded, so it can be repeated exactly;
    one row at a time, so a caller holds only the block it scores."""
    if gallery_size < 1:
        raise ValueError("gallery_size must be at least 1")
    names, codes_raw = np.unique(np.asarray(persons), return_inverse=True)
    codes = codes_raw.reshape(-1).astype(np.int64)
    n_persons = names.size
    if n_persons - 1 < gallery_size:
        raise ValueError(f"a gallery of {gallery_size} other persons needs more than {n_persons} persons")
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_persons)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rng = np.random.default_rng(seed)
    for code in codes:
        # Draw among the other persons: indices 0..P-2, shifted past the probe's own code.
        others = rng.choice(n_persons - 1, size=gallery_size, replace=False)
        others += others >= code
        yield order[starts[others] + rng.integers(0, counts[others])]


def nonmated_top1(
    embeddings: NDArray[Any],
    persons: Sequence[str],
    gallery_size: int,
    metric: Metric,
    seed: int,
    block: int = 512,
    score: Callable[[NDArray[Any], NDArray[Any]], NDArray[np.float64]] | None = None,
) -> NDArray[np.float64]:
    """Top-1 similarity of each image searched against its own random gallery (:func:`gallery_draws`).

    ``embeddings`` (n, d), ``persons`` n labels; ``gallery_size`` at most the number of other persons;
    ``score(a, b)``: an (len(a), len(b)) score matrix in place of ``metric``'s similarity (e.g. a fair map).
    """
    emb = np.asarray(embeddings)
    n = emb.shape[0]
    if len(persons) != n:
        raise ValueError(f"persons has {len(persons)} labels for {n} embeddings")
    draws = gallery_draws(persons, gallery_size, seed)
    top1 = np.empty(n, dtype=np.float64)
    for r0 in range(0, n, block):
        picks = np.stack(list(itertools.islice(draws, block)))
        rows = emb[r0 : r0 + block]
        sims = similarity_matrix(rows, emb, metric) if score is None else score(rows, emb)
        top1[r0 : r0 + block] = np.take_along_axis(sims, picks, axis=1).max(axis=1)
    return top1


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
