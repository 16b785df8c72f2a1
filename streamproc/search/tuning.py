"""Choosing the query-time beam width (``ef_search``): recall@1 against exact search, with a Wilson bound.

Queries are ``(Q, dim)`` float32 like :meth:`HnswIndex.search`'s; ground truth is
:func:`~streamproc.search.index.exact_search` unless the caller passes its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamproc.search.index import HnswIndex, as_matrix, exact_search

_log = logging.getLogger(__name__)

# Up to 2048, not 512: on unstructured 128-d data (random vectors) recall@1 >= 0.99
# needs ef ~1024 at 2e4 elements with M=16 (0.988 at 512). Real watchlists are small
# and structured, so tuning usually stops at 16-64.
DEFAULT_EF_CANDIDATES: Final = (16, 32, 64, 128, 256, 512, 1024, 2048)


def recall_at_1(
    index: HnswIndex,
    queries: ArrayLike,
    ef: int,
    exact: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None,
) -> float:
    """Fraction of queries whose HNSW top-1 is the exact top-1 at beam width ``ef``.

    A different label at the same distance (duplicate vectors) counts as a hit.
    ``exact`` (from :func:`exact_search`, ``(Q, >=1)``) may be passed to reuse ground truth.
    """
    q = as_matrix(queries, index.params.dim, "queries")
    if q.shape[0] == 0 or len(index) == 0:
        return 1.0
    true_labels, true_dist = exact if exact is not None else exact_search(index, q, 1)
    got_labels, got_dist = index.search_at(q, 1, ef)
    tol = 1e-5 * np.maximum(1.0, np.abs(true_dist[:, 0]))
    hits = (got_labels[:, 0] == true_labels[:, 0]) | (got_dist[:, 0] <= true_dist[:, 0] + tol)
    return float(np.mean(hits))


def tune_ef(
    index: HnswIndex,
    sample_queries: ArrayLike,
    target_recall: float = 0.99,
    candidates: Sequence[int] = DEFAULT_EF_CANDIDATES,
    *,
    confidence: float = 0.95,
    exact: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None,
) -> int:
    """Smallest ``ef`` in ``candidates`` whose recall@1 on ``sample_queries`` meets the target.

    The target must hold for *unseen* queries, not just the sample: an ef is
    accepted when the one-sided Wilson lower bound of its measured recall at
    ``confidence`` reaches ``target_recall`` (``confidence=0.5`` or less: the plain
    point estimate). With 500 queries that allows at most one miss for 0.99.
    Ground truth is exact search (hnswlib.BFIndex) unless ``exact`` is given. If no
    candidate qualifies, the largest is returned and a warning logged.
    Does not change ``index.ef_search``; the caller assigns the result.
    """
    ordered = sorted({int(c) for c in candidates})
    if not ordered or ordered[0] < 1:
        raise ValueError(f"candidates must be positive integers, got {candidates!r}")
    q = as_matrix(sample_queries, index.params.dim, "sample_queries")
    if len(index) == 0 or q.shape[0] == 0:
        return ordered[0]
    truth = exact if exact is not None else exact_search(index, q, 1)
    z = NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0
    recall = 0.0
    for ef in ordered:
        recall = recall_at_1(index, q, ef, truth)
        bound = _wilson_lower(recall, q.shape[0], z)
        if bound >= target_recall:
            _log.debug(
                "tune_ef: ef=%d gives recall@1=%.4f (lower bound %.4f, target %.3f)", ef, recall, bound, target_recall
            )
            return ef
    _log.warning(
        "tune_ef: recall@1 target %.3f not reached (%.4f at ef=%d on %d queries); using ef=%d",
        target_recall,
        recall,
        ordered[-1],
        q.shape[0],
        ordered[-1],
    )
    return ordered[-1]


def _wilson_lower(p: float, n: int, z: float) -> float:
    """One-sided Wilson score lower bound for a proportion ``p`` measured on ``n`` trials."""
    if z <= 0.0:
        return p
    z2n = z * z / n
    centre = p + z2n / 2
    spread = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return (centre - spread) / (1 + z2n)
