"""Verification error rates from score arrays (pure numpy, no I/O): thresholds at an FMR, TAR, ROC/DET, AUC.

Open-set (rank-1) rates are in :mod:`streamproc.eval.openset_metrics`, binomial intervals in
:mod:`streamproc.eval.intervals`. Conventions, shared by every function here and there:

* Scores are *similarities*: higher means more alike. For a distance-based embedder the
  caller passes ``similarity = -distance``.
* A comparison is *accepted* (declared "same person") when ``score >= threshold``.
* ``genuine`` holds same-person comparison scores, ``impostor`` different-person ones; both
  are 1-d float arrays. ``impostor`` may be float32 (see :func:`all_pairs_scores`), which is
  why the functions below never compare a float32 array against a Python float: NumPy would
  round the threshold to float32 and count ties at the boundary as accepted.
* Scores may be ``-inf`` (for instance "no candidate returned"); NaN and ``+inf`` are
  rejected with ``ValueError`` because no threshold can order them.

Thresholds are chosen on *counts*, never on interpolated rates, so that "FMR <= 1e-3" is
literally true of the impostor set the threshold came from, ties included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating[Any]]
"""Any 1-d float array (float32 or float64)."""


# --------------------------------------------------------------------------- helpers


def as_scores(x: Any, name: str, *, finite: bool = False) -> FloatArray:
    """Validate a 1-d score array without copying it (float32 stays float32); ValueError naming ``name``."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    if arr.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be a float32 or float64 array, got {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if finite:
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite scores")
    elif np.isnan(arr).any() or np.isposinf(arr).any():
        raise ValueError(f"{name} contains NaN or +inf scores")
    return arr


def _rate(rate: float, name: str) -> float:
    if not (isinstance(rate, int | float) and 0.0 <= float(rate) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {rate!r}")
    return float(rate)


def allowed_count(rate: float, n: int) -> int:
    """``floor(rate * n)``, forgiving the last-bit error of binary floating point.

    ``0.29 * 100`` is ``28.999999999999996`` in binary floating point. A product within a few
    ulps of an integer is taken to be that integer, which is what a reader of "FMR 0.29 on
    100 impostors" expects (29); any other product is floored as usual.
    """
    product = float(rate) * n
    nearest = round(product)
    if abs(product - nearest) <= 16 * math.ulp(max(abs(product), 1.0)):
        return int(nearest)
    return math.floor(product)


def _count_ge_unsorted(x: FloatArray, t: float) -> int:
    """How many values of ``x`` are ``>= t``, compared in float64 (see module docstring)."""
    return int(np.count_nonzero(x >= np.float64(t)))


# --------------------------------------------------------------------------- verification


def threshold_at_fmr(impostor: FloatArray, fmr: float) -> float:
    """Most permissive threshold accepting at most ``floor(fmr * n)`` impostor scores.

    ``impostor``: shape (n,), float32 or float64. With ``allowed = floor(fmr * n)`` (see
    :func:`allowed_count`) and the scores sorted descending as ``s``, the answer is
    ``nextafter(s[allowed], +inf)`` in float64: every score strictly above ``s[allowed]`` is
    accepted, and since there are at most ``allowed`` of them the bound holds even when
    ``s[allowed]`` is tied with scores before it (a tie cannot be split, so the realised
    count may be below ``allowed``). Any lower threshold would accept ``s[allowed]`` too, so
    none is more permissive.
    ``allowed >= n`` (``fmr == 1``) gives ``-inf``: accept everything.

    Uses ``np.partition`` (O(n)), so 84M float32 impostor scores cost one 336 MB copy.
    Raises ``ValueError`` for an empty array, NaN/+inf scores or ``fmr`` outside [0, 1].
    """
    imp = as_scores(impostor, "impostor")
    allowed = allowed_count(_rate(fmr, "fmr"), imp.size)
    if allowed >= imp.size:
        return -math.inf
    kth = imp.size - 1 - allowed  # index of s_desc[allowed] in ascending order
    boundary = float(np.partition(imp, kth)[kth])
    return float(np.nextafter(boundary, math.inf))


def tar_at_fmr(genuine: FloatArray, impostor: FloatArray, fmr: float) -> tuple[float, float]:
    """``(TAR, threshold)``: fraction of ``genuine`` scores ``>= threshold_at_fmr(impostor, fmr)``."""
    gen = as_scores(genuine, "genuine")
    t = threshold_at_fmr(impostor, fmr)
    return _count_ge_unsorted(gen, t) / gen.size, t


def kfold_accuracy(
    scores: FloatArray, is_same: NDArray[np.bool_], folds: NDArray[np.int64]
) -> tuple[float, float, list[float]]:
    """LFW View-2 protocol: ``(mean, std, per-fold accuracies)``.

    ``scores`` (n,) finite floats; ``is_same`` (n,) bool; ``folds`` (n,) integer fold label
    per pair (at least two distinct labels). For each fold, in ascending label order, the
    threshold is the one maximising accuracy on the *other* folds, searched over the
    midpoints of consecutive sorted unique training scores plus "accept all" (-inf) and
    "reject all" (+inf), so a one-class training set still gets a threshold. Among equally
    good thresholds the lowest is taken (``argmax`` convention), for reproducibility. The
    threshold is then applied (``score >= t`` means same) to the held-out fold. ``std`` is
    the population standard deviation (ddof=0), as the common LFW evaluation code reports.
    """
    s = as_scores(scores, "scores", finite=True).astype(np.float64, copy=False)
    same = np.asarray(is_same)
    fold = np.asarray(folds)
    if same.dtype != np.bool_ or same.shape != s.shape:
        raise ValueError("is_same must be a bool array with the same shape as scores")
    if fold.dtype.kind not in "iu" or fold.shape != s.shape:
        raise ValueError("folds must be an integer array with the same shape as scores")
    labels = np.unique(fold)
    if labels.size < 2:
        raise ValueError("kfold_accuracy needs at least two folds")
    accuracies: list[float] = []
    for label in labels:
        test = fold == label
        t = _best_threshold(s[~test], same[~test])
        accuracies.append(float(np.mean((s[test] >= t) == same[test])))
    acc = np.asarray(accuracies)
    return float(acc.mean()), float(acc.std()), accuracies


def _best_threshold(scores: NDArray[np.float64], is_same: NDArray[np.bool_]) -> float:
    """Lowest accuracy-maximising threshold among midpoints of unique scores and +-inf."""
    uniq, inverse = np.unique(scores, return_inverse=True)
    n_same = np.bincount(inverse, weights=is_same, minlength=uniq.size)
    n_diff = np.bincount(inverse, weights=~is_same, minlength=uniq.size)
    # Cut c (0..m) accepts uniq[c:]: correct = same at/above the cut + different below it.
    same_above = np.concatenate(([0.0], np.cumsum(n_same[::-1])))[::-1]
    diff_below = np.concatenate(([0.0], np.cumsum(n_diff)))
    best = int(np.argmax(same_above + diff_below))
    if best == 0:
        return -math.inf
    if best == uniq.size:
        return math.inf
    lo, hi = float(uniq[best - 1]), float(uniq[best])
    mid = 0.5 * lo + 0.5 * hi  # no overflow; may round onto lo for adjacent floats
    return mid if mid > lo else hi


def roc_curve(
    genuine: FloatArray, impostor: FloatArray
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Exact ``(fmr, fnmr, thresholds)`` at every distinct score, plus one above them all.

    ``thresholds`` (m + 1,) float64 ascending: the m distinct values of both arrays, then
    ``nextafter(max, +inf)``. So ``fmr`` runs from 1 down to 0 (non-increasing) and
    ``fnmr`` from 0 up to 1 (non-decreasing); ``fmr[i] = mean(impostor >= thresholds[i])``,
    ``fnmr[i] = mean(genuine < thresholds[i])``. Sorts both arrays: for tens of millions of
    impostors prefer :func:`det_curve`, which evaluates a log-spaced subset.
    """
    gen = np.sort(as_scores(genuine, "genuine").astype(np.float64))
    imp = np.sort(as_scores(impostor, "impostor").astype(np.float64))
    uniq = np.unique(np.concatenate((gen, imp)))
    thresholds = np.append(uniq, np.nextafter(uniq[-1], np.inf))
    fmr = (imp.size - np.searchsorted(imp, thresholds, side="left")) / imp.size
    fnmr = np.searchsorted(gen, thresholds, side="left") / gen.size
    return fmr.astype(np.float64), fnmr.astype(np.float64), thresholds


def det_curve(
    genuine: FloatArray, impostor: FloatArray, n_points: int = 200
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``(fmr, fnmr, thresholds)`` at about ``n_points`` log-spaced FMR operating points.

    The points are :func:`threshold_at_fmr` thresholds for allowed impostor counts
    ``0, 1, ..., n`` spaced logarithmically (plus ``-inf``, accept all), so the curve is dense
    where a log-axis DET plot needs it and costs one sort however many impostors there are.
    ``fmr`` is the realised rate (ties can make it lower than the target). Same order as
    :func:`roc_curve`: thresholds ascending, ``fmr`` non-increasing, ``fnmr`` non-decreasing.
    """
    if n_points < 2:
        raise ValueError("n_points must be at least 2")
    gen = np.sort(as_scores(genuine, "genuine").astype(np.float64))
    imp = np.sort(as_scores(impostor, "impostor"))  # keeps float32: one copy, no upcast
    n = imp.size
    allowed = np.unique(np.floor(np.logspace(0.0, math.log10(n + 1), n_points)).astype(np.int64) - 1)
    allowed = allowed[(allowed >= 0) & (allowed < n)]
    boundary = imp[n - 1 - allowed][::-1].astype(np.float64)  # ascending
    boundary = np.unique(boundary)
    # Accepting scores > boundary == accepting >= nextafter(boundary); compare in own dtype.
    fmr_counts = n - np.searchsorted(imp, boundary.astype(imp.dtype), side="right")
    fnmr_counts = np.searchsorted(gen, boundary, side="right")
    thresholds = np.concatenate(([-np.inf], np.nextafter(boundary, np.inf)))
    fmr = np.concatenate(([1.0], fmr_counts / n))
    fnmr = np.concatenate(([0.0], fnmr_counts / gen.size))
    return fmr.astype(np.float64), fnmr.astype(np.float64), thresholds.astype(np.float64)


def auc(genuine: FloatArray, impostor: FloatArray) -> float:
    """P(genuine score > impostor score), ties counting 1/2: the Mann-Whitney U statistic.

    Computed by ranking each genuine score among the sorted impostors (two binary searches
    per genuine score), O((n_g + n_i) log n_i), exact integer counts.
    """
    gen = as_scores(genuine, "genuine")
    imp = np.sort(as_scores(impostor, "impostor"))
    if imp.dtype != np.float64 and np.array_equal(gen.astype(imp.dtype).astype(gen.dtype), gen):
        gen = gen.astype(imp.dtype)  # exact in the impostor dtype: avoid upcasting imp
    less = np.searchsorted(imp, gen, side="left").astype(np.int64)
    less_equal = np.searchsorted(imp, gen, side="right").astype(np.int64)
    twice_u = int(np.sum(less, dtype=np.int64)) + int(np.sum(less_equal, dtype=np.int64))
    return twice_u / (2.0 * gen.size * imp.size)


def all_pairs_scores(
    embeddings: NDArray[np.floating[Any]],
    identities: Sequence[str] | NDArray[Any],
    metric: Literal["l2", "cosine"],
    block: int = 2048,
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """Similarity of every unordered pair ``i < j``, split into ``(genuine, impostor)``.

    ``embeddings`` (N, D) float; ``identities`` N labels. ``cosine``: dot product of
    L2-normalised rows (a zero row raises ``ValueError``). ``l2``: ``-sqrt(max(0,
    |a|^2 + |b|^2 - 2 a.b))``, i.e. minus the Euclidean distance.

    Work is done in ``block x block`` float64 tiles (32 MB at 2048), so N = 13,000 (84M
    pairs) never materialises an N x N matrix. Both outputs list pairs in row-major
    ``(i, j)`` order. ``impostor`` is float32 to halve its memory (84M -> 336 MB); to keep
    ties as ties between the two sets, ``genuine`` holds the same float32-rounded values,
    stored as float64.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.dtype.kind != "f":
        raise ValueError(f"embeddings must be a 2-d float array, got {emb.dtype} {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if block < 1:
        raise ValueError("block must be positive")
    n = emb.shape[0]
    ids = np.asarray(identities)
    if ids.shape != (n,):
        raise ValueError(f"identities must have {n} entries, got shape {ids.shape}")
    _, codes_raw = np.unique(ids, return_inverse=True)
    codes = codes_raw.reshape(-1).astype(np.int64)

    x = emb.astype(np.float64)
    sq_norm = np.einsum("ij,ij->i", x, x)
    if metric == "cosine":
        if (sq_norm == 0).any():
            raise ValueError("cosine similarity is undefined for a zero embedding")
        x /= np.sqrt(sq_norm)[:, None]
    elif metric != "l2":
        raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")

    counts = np.bincount(codes)
    n_genuine = int(np.sum(counts * (counts - 1) // 2))
    n_impostor = n * (n - 1) // 2 - n_genuine
    genuine = np.empty(n_genuine, dtype=np.float64)
    impostor = np.empty(n_impostor, dtype=np.float32)
    # Next write position of each row in each output: row i's pairs are contiguous there.
    order = np.argsort(codes, kind="stable")
    occurrence = np.empty(n, dtype=np.int64)  # index of item i among items of its identity
    group_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    occurrence[order] = np.arange(n) - group_start[codes[order]]
    same_per_row = counts[codes] - occurrence - 1  # same-identity items j > i
    g_pos = np.concatenate(([0], np.cumsum(same_per_row)[:-1])).astype(np.int64)
    i_pos = np.concatenate(([0], np.cumsum((n - 1 - np.arange(n)) - same_per_row)[:-1])).astype(np.int64)

    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        rows = np.arange(r0, r1)
        for c0 in range(r0, n, block):  # only tiles touching the upper triangle
            c1 = min(c0 + block, n)
            sim = x[r0:r1] @ x[c0:c1].T
            if metric == "l2":
                sq = sq_norm[r0:r1, None] + sq_norm[None, c0:c1] - 2.0 * sim
                sim = -np.sqrt(np.maximum(sq, 0.0))
            sim32 = sim.astype(np.float32)
            upper = np.arange(c0, c1)[None, :] > rows[:, None]
            same = (codes[r0:r1, None] == codes[None, c0:c1]) & upper
            other = upper & ~same
            for mask, out, pos in ((same, genuine, g_pos), (other, impostor, i_pos)):
                offsets = np.cumsum(mask, axis=1) - 1 + pos[r0:r1, None]
                out[offsets[mask]] = sim32[mask]
                pos[r0:r1] += mask.sum(axis=1)
    return genuine, impostor
