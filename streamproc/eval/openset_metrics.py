"""Open-set (watchlist) error rates at rank 1, from score arrays: FPIR, FNIR and false candidates shown.

Score conventions as in :mod:`streamproc.eval.metrics` (similarities, accepted when ``score >= threshold``);
a ``-inf`` score means "no candidate returned" and never reaches any threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamproc.eval.metrics import FloatArray, as_scores, threshold_at_fmr


@dataclass(frozen=True)
class OpenSetResult:
    """One open-set (watchlist) operating point.

    ``fpir``: fraction of non-mated probes (subject not enrolled) whose top-1 score is
    ``>= threshold`` — each would put a wrong person in front of an operator.
    ``fnir``: fraction of mated probes (subject enrolled) whose rank-1 candidate is not
    their subject, or is but scores ``< threshold``. ``false_candidates``: how many wrong
    rank-1 candidates are shown: non-mated hits plus mated probes whose wrong rank-1
    candidate scores ``>= threshold``.
    """

    threshold: float
    fpir: float
    fnir: float
    n_mated: int
    n_nonmated: int
    false_candidates: int


def open_set_at_threshold(
    mated_rank1_correct: NDArray[np.bool_],
    mated_rank1_score: FloatArray,
    nonmated_rank1_score: FloatArray,
    threshold: float,
) -> OpenSetResult:
    """FPIR/FNIR at a given threshold (rank-1 only).

    ``mated_rank1_correct`` (M,) bool: is the best gallery candidate of mated probe m the
    right subject (False when no candidate was returned). ``mated_rank1_score`` (M,): that
    candidate's score, ``-inf`` when none was returned. ``nonmated_rank1_score`` (K,): best
    score of each non-mated probe (``-inf``: none). A ``-inf`` score never reaches a
    threshold, not even ``-inf``, since there is no candidate to show. M, K >= 1.
    """
    correct = np.asarray(mated_rank1_correct)
    mated = as_scores(mated_rank1_score, "mated_rank1_score")
    nonmated = as_scores(nonmated_rank1_score, "nonmated_rank1_score")
    if correct.dtype != np.bool_ or correct.shape != mated.shape:
        raise ValueError("mated_rank1_correct must be a bool array shaped like mated_rank1_score")
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    t = np.float64(threshold)
    # -inf means "no candidate returned": nothing to show, whatever the threshold.
    hit = (mated >= t) & (mated > -np.inf)
    false_nonmated = int(np.count_nonzero((nonmated >= t) & (nonmated > -np.inf)))
    return OpenSetResult(
        threshold=float(threshold),
        fpir=false_nonmated / nonmated.size,
        fnir=int(np.count_nonzero(~(correct & hit))) / mated.size,
        n_mated=int(mated.size),
        n_nonmated=int(nonmated.size),
        false_candidates=false_nonmated + int(np.count_nonzero(~correct & hit)),
    )


def fnir_at_fpir(
    mated_rank1_correct: NDArray[np.bool_],
    mated_rank1_score: FloatArray,
    nonmated_rank1_score: FloatArray,
    fpir: float,
) -> OpenSetResult:
    """FNIR at the most permissive threshold with FPIR <= ``fpir``.

    The threshold is :func:`threshold_at_fmr` of the non-mated top-1 scores: at most
    ``floor(fpir * K)`` non-mated probes reach it. See :func:`open_set_at_threshold`.
    """
    t = threshold_at_fmr(as_scores(nonmated_rank1_score, "nonmated_rank1_score"), fpir)
    return open_set_at_threshold(mated_rank1_correct, mated_rank1_score, nonmated_rank1_score, t)


def open_set_identification(
    mated_rank1_correct: NDArray[np.bool_],
    mated_rank1_score: FloatArray,
    nonmated_rank1_score: FloatArray,
    *,
    fpir: float | None = None,
    threshold: float | None = None,
) -> OpenSetResult:
    """Open-set operating point at a target ``fpir`` or a fixed ``threshold`` (exactly one)."""
    if (fpir is None) == (threshold is None):
        raise ValueError("give exactly one of fpir or threshold")
    if fpir is not None:
        return fnir_at_fpir(mated_rank1_correct, mated_rank1_score, nonmated_rank1_score, fpir)
    assert threshold is not None
    return open_set_at_threshold(mated_rank1_correct, mated_rank1_score, nonmated_rank1_score, threshold)


def rank1_split(
    scores: FloatArray,
    gallery_identities: Sequence[str] | NDArray[Any],
    probe_identities: Sequence[str] | NDArray[Any],
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
    """From a (P, G) probe-by-gallery similarity matrix to the open-set inputs.

    Returns ``(mated_rank1_correct, mated_rank1_score, nonmated_rank1_score)``: a probe is
    mated when its identity appears in the gallery. The rank-1 candidate is the highest
    score (first column on ties, i.e. ``argmax``). An empty gallery (G = 0) gives every
    probe a ``-inf`` rank-1 score and no correct candidate.
    """
    s = np.asarray(scores, dtype=np.float64)
    gal = np.asarray(gallery_identities)
    probe = np.asarray(probe_identities)
    if s.ndim != 2 or s.shape != (probe.size, gal.size):
        raise ValueError(f"scores must have shape (P, G) = ({probe.size}, {gal.size}), got {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    is_mated = np.isin(probe, gal)
    if gal.size == 0:
        best = np.full(probe.size, -np.inf)
        correct = np.zeros(probe.size, dtype=np.bool_)
    else:
        top = np.argmax(s, axis=1)
        best = s[np.arange(probe.size), top]
        correct = gal[top] == probe
    return correct[is_mated], best[is_mated], best[~is_mated]
