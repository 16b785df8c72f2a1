"""Fair scores: a comparison's distance re-expressed by how often look-alike impostors reach it.

Why: one global threshold promises one false-match rate, but impostor scores are not spread alike across
faces. Faces the model separates poorly (in practice whole demographic groups) score higher against each
other, so the same threshold falsely matches them far more often. This map measures how impostor scores
fall between regions of the embedding space and among look-alikes, and moves every comparison onto one
scale on which a threshold keeps its false-match rate wherever the two faces lie. No demographic label is
used, in fitting or at run time: regions are k-means clusters of embeddings (as in FairCal, Salvador et al.,
ICLR 2022, and fair score normalisation, Terhörst et al., IJCB 2020).

A comparison of faces ``x`` and ``y`` at similarity ``s`` (``1 - distance`` for cosine, ``-distance`` for L2):

1. ``p = P_ab(s)``: the log10 rate at which impostor pairs with one face in ``x``'s cluster ``a`` and one in
   ``y``'s cluster ``b`` reach ``s`` (``pair_similarity[a, b]``: a curve per cluster pair, empirical where the
   calibration pairs show it, a normal tail with the pairs' own spread beyond). Symmetric in ``x`` and ``y``.
2. ``l = A(p)``: the log10 rate at which *look-alike* impostor pairs of the calibration set reach a pair
   level ``p`` (``lookalike_levels``). A look-alike pair: one face is among the other's nearest
   ``lookalike`` fraction of the calibration faces. Cluster pairs alone are too coarse (faces of one
   cluster pair that look alike score well above its average, and false matches come from those), so the
   promise is made for look-alikes, the comparisons that actually produce false matches.
3. ``Q_ref(l)``: the similarity at which the *reference* impostors (the pairs the calibration file's
   thresholds were set on) are accepted at rate ``10**l``; returned as a distance in the embedder's unit.

So ``calibrated distance <= t``, where ``t`` is the threshold set for FMR ``f`` on the reference pairs, means
that look-alike impostors like this pair are accepted at about rate ``f``. For a fixed pair of clusters the
map is increasing in similarity. Pure numpy; fitting is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamproc.types import Metric

FORMAT = "fair-score-v1"
LEVEL_STEP = 0.25
DEEPEST_LEVEL = -8.0
MIN_TAIL_PAIRS = 10  # a level is measured only where at least this many pairs lie beyond it
_NORMAL = NormalDist()
_CHUNK = 1024  # rows of the similarity matrix held at once while fitting


@dataclass(frozen=True)
class FairScoreMap:
    """Cluster-pair impostor curves, the look-alike recalibration and the reference curve (module docstring).

    An ensemble of ``M`` k-means partitions (seeds ``seed .. seed + M - 1``) whose look-alike log rates are
    averaged: one partition's cluster boundaries move the result by whole multiples of the target (measured),
    the mean of a few does not. ``centroids`` (M, K, dim) unit rows; ``levels`` (L,) log10 rates descending
    from 0; ``pair_similarity`` (M, K, K, L) symmetric in K x K, rising along L; ``lookalike_levels`` (M, L)
    descending; ``reference_similarity`` (L,) rising.
    """

    metric: Metric
    centroids: NDArray[np.float32]
    levels: NDArray[np.float64]
    pair_similarity: NDArray[np.float64]
    lookalike_levels: NDArray[np.float64]
    reference_similarity: NDArray[np.float64]
    lookalike: float
    data: str

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def n_members(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, vectors: NDArray[np.floating[Any]]) -> NDArray[np.int64]:
        """``(n, M)``: each ``(n, dim)`` embedding's nearest centroid (cosine) in every partition."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.centroids.shape[2]:
            raise ValueError(f"vectors must have shape (n, {self.centroids.shape[2]}), got {x.shape}")
        u = _unit(x)
        return np.stack([np.argmax(u @ c.T, axis=1) for c in self.centroids], axis=1).astype(np.int64)

    def pair_level(
        self, member: int, left: NDArray[np.int64], right: NDArray[np.int64], similarity: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Step 1 in one partition: log10 rate of impostor pairs of clusters ``left`` x ``right`` (1-D each)."""
        out = np.empty(similarity.shape, dtype=np.float64)
        flat, lv, rv = out.reshape(-1), np.asarray(left).reshape(-1), np.asarray(right).reshape(-1)
        s = similarity.reshape(-1)
        for start in range(0, s.size, _CHUNK * 64):  # (chunk, L) curves at a time
            part = slice(start, start + _CHUNK * 64)
            flat[part] = _curves_inverse(s[part], self.pair_similarity[member, lv[part], rv[part]], self.levels)
        return out

    def log_fmr(
        self, left: NDArray[np.int64], right: NDArray[np.int64], similarity: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Steps 1-2: log10 look-alike FMR of each comparison; ``left``/``right`` from :meth:`assign` (n, M)."""
        if similarity.size == 0:
            return np.zeros(0, dtype=np.float64)
        lv = np.asarray(left).reshape(similarity.size, -1)
        rv = np.asarray(right).reshape(similarity.size, -1)
        if lv.shape[1] != self.n_members or rv.shape != lv.shape:
            raise ValueError(f"cluster arrays must be (n, {self.n_members}) as assign() returns them")
        total = np.zeros(similarity.shape, dtype=np.float64)
        for m in range(self.n_members):
            p = self.pair_level(m, lv[:, m], rv[:, m], similarity)
            total += _level_map(p, self.levels, self.lookalike_levels[m])
        return total / self.n_members

    def calibrate(
        self, left: NDArray[np.int64], right: NDArray[np.int64], distances: NDArray[np.floating[Any]]
    ) -> NDArray[np.float64]:
        """Calibrated distances of comparisons whose faces have clusters ``left``/``right`` ((n, M) each)."""
        s = _similarity(np.asarray(distances, dtype=np.float64).reshape(-1), self.metric)
        level = self.log_fmr(left, right, s)
        return _distance(_curve(level, self.levels, self.reference_similarity), self.metric)

    def floor(self, clusters: NDArray[np.int64], others: list[NDArray[np.int64]], distance: float) -> float:
        """A lower bound on the calibrated distance of any comparison of a face with ``clusters`` ((M,), from
        :meth:`assign`) against a face whose cluster in partition ``m`` is one of ``others[m]``, at a raw distance
        of ``distance`` or more.

        Why it holds: for a fixed pair of clusters each partition's level never falls as the raw distance grows
        (its curves rise, the look-alike table descends with the levels), so each partition's level is at least
        its lowest over ``others[m]`` at ``distance``; the ensemble's level, their mean, is at least the mean of
        those minima; and the calibrated distance rises with the level.
        """
        s = _similarity(np.array([distance], dtype=np.float64), self.metric)[0]
        total = 0.0
        for m in range(self.n_members):
            right = np.asarray(others[m], dtype=np.int64).reshape(-1)
            if right.size == 0:
                raise ValueError("floor() needs at least one cluster per partition")
            left = np.full(right.size, int(clusters[m]), dtype=np.int64)
            p = self.pair_level(m, left, right, np.full(right.size, s, dtype=np.float64))
            total += float(np.min(_level_map(p, self.levels, self.lookalike_levels[m])))
        level = np.array([total / self.n_members], dtype=np.float64)
        return float(_distance(_curve(level, self.levels, self.reference_similarity), self.metric)[0])

    def calibrate_pairs(
        self,
        probes: NDArray[np.floating[Any]],
        templates: NDArray[np.floating[Any]],
        distances: NDArray[np.floating[Any]],
    ) -> NDArray[np.float64]:
        """Calibrated distances of ``probes[i]`` vs ``templates[i]`` (both ``(n, dim)``) at raw ``distances[i]``."""
        return self.calibrate(self.assign(probes), self.assign(templates), distances)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded to 7 decimals, far below what float32 embeddings resolve)."""

        def r(a: NDArray[Any]) -> Any:
            return np.round(a.astype(np.float64), 7).tolist()

        return {
            "format": FORMAT,
            "metric": self.metric,
            "lookalike": self.lookalike,
            "data": self.data,
            "levels": r(self.levels),
            "lookalike_levels": r(self.lookalike_levels),
            "reference_similarity": r(self.reference_similarity),
            "centroids": r(self.centroids),
            "pair_similarity": r(self.pair_similarity),
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> FairScoreMap:
        """Inverse of :meth:`to_dict`; ValueError when the format, shapes or monotony do not fit."""
        if raw.get("format") != FORMAT:
            raise ValueError(f"fair score map format {raw.get('format')!r} is not {FORMAT!r}")
        metric = raw.get("metric")
        if metric not in ("l2", "cosine"):
            raise ValueError(f"fair score map metric {metric!r}")
        levels = np.asarray(raw["levels"], dtype=np.float64)
        lookalike = np.asarray(raw["lookalike_levels"], dtype=np.float64)
        ref = np.asarray(raw["reference_similarity"], dtype=np.float64)
        centroids = np.asarray(raw["centroids"], dtype=np.float32)
        pairs = np.asarray(raw["pair_similarity"], dtype=np.float64)
        m, k = centroids.shape[:2] if centroids.ndim == 3 else (-1, -1)
        if levels.ndim != 1 or levels.size < 2 or ref.shape != levels.shape or lookalike.shape != (m, levels.size):
            raise ValueError("fair score map: levels, lookalike_levels and reference_similarity must be equal-length")
        if k < 1 or pairs.shape != (m, k, k, levels.size):
            raise ValueError("fair score map: one curve per pair of centroids, one value per level")
        if np.any(np.diff(levels) >= 0) or np.any(np.diff(lookalike, axis=1) > 0):
            raise ValueError("fair score map: levels must descend")
        if np.any(np.diff(ref) <= 0) or np.any(np.diff(pairs, axis=3) <= 0):
            raise ValueError("fair score map: every similarity curve must rise")
        unit = np.stack([_unit(c) for c in centroids])
        return FairScoreMap(metric, unit, levels, pairs, lookalike, ref, float(raw["lookalike"]), str(raw["data"]))


# ------------------------------------------------------------------------------------------------ fitting


def fit_fair_map(
    vectors: NDArray[np.floating[Any]],
    persons: list[str],
    metric: Metric,
    reference_impostors: NDArray[np.floating[Any]],
    *,
    n_clusters: int = 16,
    lookalike: float = 0.05,
    members: int = 4,
    seed: int = 0,
    max_per_person: int | None = None,
    data: str = "",
) -> FairScoreMap:
    """Fit the map on calibration embeddings ``(n, dim)`` with person ids (faces without one: unique ids).

    ``reference_impostors``: similarities (``1 - d`` or ``-d``) of the impostor pairs the thresholds were set
    on. Two faces of one person never count as an impostor pair. ``members`` partitions, seeds ``seed..``.
    ``max_per_person``: fit on at most this many faces of each person (the first in the given order). Why: the
    map describes how *different people's* faces fall in the embedding space, so each person should weigh about
    alike; a person with hundreds of photos (LFW has one with 236) otherwise shapes clusters and look-alike levels
    around themselves, and the map corrects every comparison near them too hard (measured: docs/fair-scores.md).
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(persons):
        raise ValueError("vectors must be (n, dim) with one person id per row")
    if max_per_person is not None:
        keep = _first_per_person(persons, max_per_person)
        x, persons = x[keep], [persons[int(i)] for i in keep]
    if not 0.0 < lookalike < 1.0:
        raise ValueError(f"lookalike must be a fraction in (0, 1), got {lookalike}")
    if n_clusters < 1 or members < 1 or x.shape[0] < 8 * n_clusters:
        raise ValueError(f"{x.shape[0]} faces are too few for {n_clusters} clusters (need >= 8 per cluster)")
    ref = np.sort(np.asarray(reference_impostors, dtype=np.float64).reshape(-1))
    if ref.size < 2:
        raise ValueError("need reference impostor pairs to put the map on the thresholds' scale")
    ids = np.unique(np.asarray(persons), return_inverse=True)[1].reshape(-1)
    sim = _pair_similarity(x, metric)
    levels = np.arange(0.0, DEEPEST_LEVEL - LEVEL_STEP / 2, -LEVEL_STEP)
    parts = [_member(x, ids, sim, levels, n_clusters, seed + r) for r in range(members)]
    centroids = np.stack([c for c, _, _ in parts])
    curves = np.stack([p for _, p, _ in parts])
    labels = np.stack([lab for _, _, lab in parts], axis=1)
    flat = np.zeros((members, levels.size), dtype=np.float64)
    partial = FairScoreMap(metric, centroids, levels, curves, flat, levels.copy(), lookalike, data)
    looks = _lookalike_levels(partial, x, ids, labels, sim, lookalike)
    return FairScoreMap(metric, centroids, levels, curves, looks, _tail_curve(ref, levels), lookalike, data)


def _first_per_person(persons: list[str], cap: int) -> NDArray[np.int64]:
    """Row indices keeping the first ``cap`` rows of each person id, in order."""
    if cap < 1:
        raise ValueError(f"max_per_person must be >= 1, got {cap}")
    seen: dict[str, int] = {}
    keep = []
    for i, p in enumerate(persons):
        seen[p] = seen.get(p, 0) + 1
        if seen[p] <= cap:
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _member(
    x: NDArray[np.float32], ids: NDArray[np.int64], sim: Any, levels: NDArray[np.float64], k: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.int64]]:
    """One partition: (centroids (K, dim), cluster-pair curves (K, K, L), each face's cluster (n,))."""
    centroids, labels = spherical_kmeans(x, k, seed)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    scores: dict[tuple[int, int], NDArray[np.float64]] = {}
    for a in range(k):
        for b in range(a, k):
            s = sim(members[a], members[b])
            keep = ids[members[a]][:, None] != ids[members[b]][None, :]
            if a == b:
                keep &= np.triu(np.ones_like(keep), 1)
            scores[(a, b)] = np.sort(s[keep])
    pooled = np.sort(np.concatenate(list(scores.values())))
    curves = np.empty((k, k, levels.size), dtype=np.float64)
    for (a, b), sc in scores.items():
        curves[a, b] = curves[b, a] = _tail_curve(sc if sc.size >= 2 else pooled, levels)
    return centroids, curves, labels


def _lookalike_levels(
    partial: FairScoreMap,
    x: NDArray[np.float32],
    ids: NDArray[np.int64],
    labels: NDArray[np.int64],
    sim: Any,
    lookalike: float,
) -> NDArray[np.float64]:
    """Step 2's tables (M, L): per partition, for each pair level, log10 of the share of look-alike impostor
    pairs at or below it. Deeper than the look-alike pairs can show, a table continues parallel to the
    identity (each further decade of pair level is a further decade of look-alike rate)."""
    n = x.shape[0]
    rank = max(1, min(n - 1, round(lookalike * n)))
    everyone = np.arange(n)
    kth = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        rows = everyone[start : start + _CHUNK]
        block = sim(rows, everyone)
        block[np.arange(rows.size), rows] = -np.inf
        kth[rows] = -np.partition(-block, rank - 1, axis=1)[:, rank - 1]
    found: list[list[NDArray[np.float64]]] = [[] for _ in range(partial.n_members)]
    for start in range(0, n, _CHUNK):
        rows = everyone[start : start + _CHUNK]
        block = sim(rows, everyone)
        upper = everyone[None, :] > rows[:, None]  # each unordered pair once
        look = (block >= kth[rows][:, None]) | (block >= kth[None, :])
        r, c = np.nonzero(upper & look & (ids[rows][:, None] != ids[None, :]))
        for m in range(partial.n_members):
            found[m].append(partial.pair_level(m, labels[rows[r], m], labels[c, m], block[r, c]))
    return np.stack([_share_table(np.sort(np.concatenate(f)), partial.levels) for f in found])


def _share_table(pair_levels: NDArray[np.float64], levels: NDArray[np.float64]) -> NDArray[np.float64]:
    counts = np.searchsorted(pair_levels, levels, side="right").astype(np.float64)
    measured = counts >= MIN_TAIL_PAIRS
    measured[0] = True
    out = np.log10(np.maximum(counts, 1.0) / max(pair_levels.size, 1))
    deepest = int(np.flatnonzero(measured)[-1])
    out[deepest + 1 :] = out[deepest] + (levels[deepest + 1 :] - levels[deepest])
    out[0] = 0.0
    return np.asarray(np.minimum.accumulate(np.minimum(out, 0.0)), dtype=np.float64)


def spherical_kmeans(
    vectors: NDArray[np.floating[Any]], k: int, seed: int, iterations: int = 60
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """k-means on the unit sphere (cosine), k-means++ seeding from ``seed``: (centroids (k, dim), labels)."""
    x = _unit(np.asarray(vectors, dtype=np.float32))
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(x.shape[0])]
    gap = 1.0 - x @ centroids[0]
    for i in range(1, k):
        weights = np.maximum(gap, 0.0).astype(np.float64)
        pick = rng.choice(x.shape[0], p=weights / weights.sum()) if weights.sum() > 0 else rng.integers(x.shape[0])
        centroids[i] = x[pick]
        gap = np.minimum(gap, 1.0 - x @ centroids[i])
    labels = np.full(x.shape[0], -1, dtype=np.int64)
    for _ in range(iterations):
        new = np.asarray(np.argmax(x @ centroids.T, axis=1), dtype=np.int64)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = x[labels == c]
            if len(members):
                centroids[c] = _unit(members.sum(axis=0, keepdims=True))[0]
            else:  # an empty cluster restarts at the face farthest from its centroid
                far = int(np.argmin(np.einsum("ij,ij->i", x, centroids[labels])))
                centroids[c] = x[far]
    return centroids, labels


# ---------------------------------------------------------------------------------------------- helpers


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def _similarity(distances: NDArray[np.float64], metric: Metric) -> NDArray[np.float64]:
    return -distances if metric == "l2" else 1.0 - distances


def _distance(similarity: NDArray[np.float64], metric: Metric) -> NDArray[np.float64]:
    return -similarity if metric == "l2" else 1.0 - similarity


def _pair_similarity(x: NDArray[np.float32], metric: Metric) -> Any:
    """``(rows, cols) -> (len(rows), len(cols))`` similarities in the metric's convention."""
    xd = x.astype(np.float64)
    if metric == "cosine":
        u = xd / np.maximum(np.linalg.norm(xd, axis=1, keepdims=True), 1e-12)
        return lambda r, c: u[r] @ u[c].T
    sq = np.einsum("ij,ij->i", xd, xd)
    return lambda r, c: -np.sqrt(np.maximum(sq[r][:, None] + sq[c][None, :] - 2.0 * (xd[r] @ xd[c].T), 0.0))


def _tail_curve(scores: NDArray[np.float64], levels: NDArray[np.float64]) -> NDArray[np.float64]:
    """Similarity at which a fraction ``10**level`` of the sorted ``scores`` is reached or passed.

    Empirical where at least :data:`MIN_TAIL_PAIRS` scores lie beyond the level; deeper, a normal tail with
    the scores' own standard deviation continues from the deepest measured level (impostor similarities of
    face embeddings are close to normal). Strictly increasing.
    """
    n = scores.size
    rates = 10.0**levels
    measured = rates * n >= MIN_TAIL_PAIRS
    measured[0] = True
    idx = np.clip(np.ceil(n * (1.0 - rates)).astype(np.int64), 0, n - 1)
    curve = scores[idx].astype(np.float64)
    deepest = int(np.flatnonzero(measured)[-1])
    if deepest < levels.size - 1:
        z = np.array([_NORMAL.inv_cdf(1.0 - min(float(r), 0.5)) for r in rates])  # flat above the median
        sigma = max(float(np.std(scores)), 1e-6)
        curve[deepest + 1 :] = curve[deepest] + sigma * (z[deepest + 1 :] - z[deepest])
    step = np.maximum(np.diff(curve), 1e-6)  # stays rising after to_dict rounds to 7 decimals
    return np.asarray(np.concatenate([[curve[0]], curve[0] + np.cumsum(step)]), dtype=np.float64)


def _curve(level: NDArray[np.float64], levels: NDArray[np.float64], curve: NDArray[np.float64]) -> NDArray[np.float64]:
    """Similarity at log rate ``level`` on a curve (levels descending, curve rising); linear beyond the ends."""
    lv, cv = levels[::-1], curve[::-1]  # ascending levels, descending similarity
    out = np.interp(level, lv, cv)
    lo = level < lv[0]
    out[lo] = cv[0] + (level[lo] - lv[0]) * (cv[1] - cv[0]) / (lv[1] - lv[0])
    hi = level > lv[-1]
    out[hi] = cv[-1]
    return np.asarray(out, dtype=np.float64)


def _curves_inverse(
    similarity: NDArray[np.float64], curves: NDArray[np.float64], levels: NDArray[np.float64]
) -> NDArray[np.float64]:
    """log rate at ``similarity[i]`` on ``curves[i]`` ((n,), (n, L) rising): ``levels[0]`` below a curve's
    start, piecewise linear along it (as ``np.interp``, same arithmetic), linear beyond its deepest level."""
    n, size = curves.shape
    rows = np.arange(n)
    below = np.sum(curves <= similarity[:, None], axis=1)  # curve points at or below each similarity
    j = np.clip(below - 1, 0, size - 2)
    c0, c1 = curves[rows, j], curves[rows, j + 1]
    out = (levels[j + 1] - levels[j]) / (c1 - c0) * (similarity - c0) + levels[j]
    out[below == 0] = levels[0]
    hi = below == size
    edge = curves[hi]
    out[hi] = levels[-1] + (similarity[hi] - edge[:, -1]) * (levels[-1] - levels[-2]) / (edge[:, -1] - edge[:, -2])
    return np.asarray(out, dtype=np.float64)


def _level_map(
    level: NDArray[np.float64], levels: NDArray[np.float64], mapped: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Piecewise-linear map of log rates (both tables descending); parallel to the identity beyond the deepest."""
    out = np.interp(level, levels[::-1], mapped[::-1])
    deep = level < levels[-1]
    out[deep] = mapped[-1] + (level[deep] - levels[-1])
    return np.asarray(out, dtype=np.float64)
