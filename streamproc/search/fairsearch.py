"""Watchlist search on the thresholds' scale: through the fair score map when the calibration has one.

Every caller that compares a probe with the watchlist and applies a threshold (the pipeline's matcher,
``identify``, enrolment's collision check) searches through :func:`scored_search`, so with a fair map
(:mod:`streamproc.search.fairscore`) each probe-vs-template distance is the calibrated one, computed from
both faces' clusters; without one it is the raw distance, as before.

The gallery side's clusters are computed once per opened :class:`Watchlist` (the running pipeline reopens
it when it changes) from the templates' stored vectors. The HNSW index ranks by raw distance, so the
search widens its shortlist until no template left out can beat what it keeps (see
:meth:`FairSearcher.search`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamproc.search.fairscore import FairScoreMap
from streamproc.search.store import DB_FILE, connect, live_vectors, read_label_map
from streamproc.search.watchlist import Candidate, Watchlist
from streamproc.types import Metric

FIRST_SHORTLIST = 16  # subjects fetched first; multiplied by 4 while the stopping rule is not met


@dataclass(frozen=True)
class ScoredCandidate:
    """A subject and the distance its thresholds apply to.

    ``distance``: the fair map's calibrated distance when one is applied (``fair``), else the raw one;
    ``raw_distance``: the embedder's own distance of the same template ``label`` (the subject's best by
    ``distance``).
    """

    subject_id: str
    display_name: str
    label: int
    distance: float
    raw_distance: float
    fair: bool


@dataclass(frozen=True)
class _Gallery:
    """One opened watchlist's live templates: ``labels`` (n,) as indexed, ``vectors`` (n, dim) float32 (unit
    rows for cosine), ``clusters`` (n, M) from :meth:`FairScoreMap.assign`, row indices per subject, and the
    clusters present in each partition (for :meth:`FairScoreMap.floor`)."""

    metric: Metric
    labels: NDArray[np.int64]
    vectors: NDArray[np.float32]
    clusters: NDArray[np.int64]
    rows: dict[str, NDArray[np.int64]]
    present: list[NDArray[np.int64]]


def _read_gallery(watchlist: Watchlist, fair_map: FairScoreMap) -> _Gallery:
    identity = watchlist.embedder
    conn = connect(watchlist.directory / DB_FILE, writable=False)
    try:
        labels, vectors = live_vectors(conn, identity.dim, watchlist.directory)
        label_subject, _ = read_label_map(conn)
    finally:
        conn.close()
    if identity.metric == "cosine":
        vectors = (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    clusters = fair_map.assign(vectors) if len(labels) else np.zeros((0, fair_map.n_members), dtype=np.int64)
    by_subject: dict[str, list[int]] = {}
    for row, label in enumerate(labels.tolist()):
        by_subject.setdefault(label_subject[label], []).append(row)
    rows = {sid: np.asarray(r, dtype=np.int64) for sid, r in by_subject.items()}
    present = [np.unique(clusters[:, m]) for m in range(fair_map.n_members)]
    return _Gallery(identity.metric, labels, vectors, clusters, rows, present)


def _raw_distances(query: NDArray[np.float32], vectors: NDArray[np.float32], metric: Metric) -> NDArray[np.float64]:
    """Distances of one ``(dim,)`` query to ``(n, dim)`` vectors in the index's unit (1 - cos, or L2)."""
    q = query.astype(np.float64)
    v = vectors.astype(np.float64)
    if metric == "cosine":
        return np.asarray(1.0 - v @ (q / max(float(np.linalg.norm(q)), 1e-12)), dtype=np.float64)
    return np.asarray(np.linalg.norm(v - q[None, :], axis=1), dtype=np.float64)


class FairSearcher:
    """Searches watchlists through one fair map; thread-safe (the gallery cache is behind a lock)."""

    def __init__(self, fair_map: FairScoreMap) -> None:
        self._map = fair_map
        self._lock = threading.Lock()
        self._cached: tuple[Watchlist, _Gallery] | None = None

    def _gallery(self, watchlist: Watchlist, *, fresh: bool = False) -> _Gallery:
        with self._lock:
            if fresh or self._cached is None or self._cached[0] is not watchlist:
                self._cached = (watchlist, _read_gallery(watchlist, self._map))
            return self._cached[1]

    def search(
        self, watchlist: Watchlist, queries: NDArray[np.float32], k: int, within: float | None = None
    ) -> list[list[ScoredCandidate]]:
        """Up to ``k`` subjects per ``(Q, dim)`` query, ascending by calibrated distance (each subject at its
        best template by that distance).

        Why the shortlist is long enough: the index returns subjects by their best raw distance, so every
        subject left out has all its templates at raw distance ``>= d_last`` (the last one fetched), and
        :meth:`FairScoreMap.floor` bounds from below the calibrated distance any gallery template can have
        there. The shortlist (16 subjects, then 4x) grows until the ``k``-th calibrated distance found is at or
        below that bound, or the bound exceeds ``within`` (then nothing left out can be within ``within``:
        every subject within it is found and ranked exactly, as a threshold decision needs), or every subject
        was fetched. As without the map, the index itself is approximate (its ef is tuned for recall).
        """
        return [self._one(watchlist, query, k, within) for query in np.asarray(queries, dtype=np.float32)]

    def _score(
        self, gallery: _Gallery, query: NDArray[np.float32], clusters: NDArray[np.int64], shortlist: list[Candidate]
    ) -> list[ScoredCandidate]:
        """Each shortlisted subject at its best template by calibrated distance (then raw), ascending."""
        if not shortlist:
            return []
        blocks = [gallery.rows[c.subject_id] for c in shortlist]
        rows = np.concatenate(blocks)
        owner = np.repeat(np.arange(len(blocks)), [b.size for b in blocks])
        raw = _raw_distances(query, gallery.vectors[rows], gallery.metric)
        fair = self._map.calibrate(np.repeat(clusters, rows.size, axis=0), gallery.clusters[rows], raw)
        order = np.lexsort((raw, fair, owner))  # by subject, then calibrated, then raw distance
        firsts = order[np.unique(owner[order], return_index=True)[1]]  # each subject's best template
        scored = [
            ScoredCandidate(
                shortlist[owner[i]].subject_id,
                shortlist[owner[i]].display_name,
                int(gallery.labels[rows[i]]),
                float(fair[i]),
                float(raw[i]),
                True,
            )
            for i in firsts.tolist()
        ]
        return sorted(scored, key=lambda c: (c.distance, c.raw_distance))

    def _one(
        self, watchlist: Watchlist, query: NDArray[np.float32], k: int, within: float | None
    ) -> list[ScoredCandidate]:
        clusters = self._map.assign(query[None, :])
        fetch = max(FIRST_SHORTLIST, k)
        gallery = self._gallery(watchlist)
        while True:
            shortlist = watchlist.search(query[None, :], k=fetch)[0]
            if any(c.subject_id not in gallery.rows for c in shortlist):
                gallery = self._gallery(watchlist, fresh=True)  # enrolled since it was read
            scored = self._score(gallery, query, clusters, [c for c in shortlist if c.subject_id in gallery.rows])
            if len(shortlist) < fetch:  # every live subject was fetched
                break
            floor = self._map.floor(clusters[0], gallery.present, shortlist[-1].distance)
            kth = scored[k - 1].distance if len(scored) >= k else math.inf
            if kth <= floor or (within is not None and floor > within):
                break
            fetch *= 4
        return scored[:k]


def scored_search(
    watchlist: Watchlist,
    queries: NDArray[np.float32],
    k: int,
    searcher: FairSearcher | None,
    within: float | None = None,
) -> list[list[ScoredCandidate]]:
    """:meth:`FairSearcher.search` with a map, else the watchlist's raw search in the same form."""
    if searcher is not None:
        return searcher.search(watchlist, queries, k, within)
    return [
        [ScoredCandidate(c.subject_id, c.display_name, c.label, c.distance, c.distance, False) for c in row]
        for row in watchlist.search(queries, k=k)
    ]
