"""Per-track false-flag rate: the k-of-n rule run on impostor tracks, not predicted from independent shots.

The shots of one track are one person, so they are correlated: a bystander who resembles an enrolled
person does so in every shot, and k-of-n agreement filters far less than ``P(Binomial(n, p) >= k)`` would
suggest. So the rate is measured: a track is ``n`` photos of one never-enrolled person (LFW persons with
``>= n`` photos, in random order), run through the real :class:`~streamproc.search.policy.MatchPolicy` against a
gallery of one template per person of *other* persons (LFW singletons, UTKFace faces), drawn at random for
every track at each gallery size. A track counts as flagged when the policy flags it for anyone.

Thresholds are cross-fitted: persons are hashed into folds, and a track's threshold is set at the same
per-comparison FMR on the calibration images of the other folds, so no track's person helped set the
threshold it is judged at. Tracks of one person share an identity; by default each person gives one track,
so the Clopper-Pearson bound's independence assumption holds across tracks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streamproc.config import PolicyConfig
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.metrics import all_pairs_scores, threshold_at_fmr
from streamproc.eval.openset import similarity_matrix
from streamproc.search.calibration import TrackRow
from streamproc.search.policy import MatchPolicy, ShotResult
from streamproc.types import Metric


@dataclass(frozen=True)
class TrackSet:
    """Impostor tracks: ``shots`` (tracks, n, d) embeddings, ``persons`` the one person of each track."""

    shots: NDArray[np.float64]
    persons: tuple[str, ...]


def _stable_rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}/{key}".encode()).digest()


def make_tracks(
    by_person: Mapping[str, Sequence[NDArray[Any]]], n: int, seed: int = 0, max_per_person: int = 1
) -> TrackSet:
    """Tracks of ``n`` shots from every person with at least ``n`` embeddings.

    A person's embeddings are put in a seeded order and cut into disjoint runs of ``n``, at most
    ``max_per_person`` of them: no photo is used twice, and the order only matters if callers feed more
    shots than the window.
    """
    if n < 1 or max_per_person < 1:
        raise ValueError("n and max_per_person must be >= 1")
    shots: list[NDArray[np.float64]] = []
    persons: list[str] = []
    for person in sorted(by_person):
        vectors = list(by_person[person])
        order = sorted(range(len(vectors)), key=lambda i: _stable_rank(seed, f"{person}/{i}"))
        for start in range(0, min(len(order) // n, max_per_person) * n, n):
            shots.append(np.stack([np.asarray(vectors[i], dtype=np.float64) for i in order[start : start + n]]))
            persons.append(person)
    if not shots:
        raise ValueError(f"no person has {n} or more embeddings: no impostor tracks")
    return TrackSet(np.stack(shots), tuple(persons))


def independent_rate(p: float, k: int, n: int) -> float:
    """``P(Binomial(n, p) >= k)``: the k-of-n rate if shots were independent (what correlation breaks)."""
    return float(sum(math.comb(n, j) * p**j * (1.0 - p) ** (n - j) for j in range(k, n + 1)))


def _distances(a: NDArray[Any], b: NDArray[Any], metric: Metric) -> NDArray[np.float64]:
    """Pairwise distances in the policy's unit: L2, or 1 - cos."""
    sims = similarity_matrix(a, b, metric)
    return np.asarray(-sims if metric == "l2" else 1.0 - sims, dtype=np.float64)


def track_false_flags(
    tracks: TrackSet,
    pool: NDArray[Any],
    pool_ids: Sequence[str],
    distance_thresholds: float | NDArray[Any],
    metric: Metric,
    k: int,
    n: int,
    gallery_sizes: Sequence[int],
    seed: int = 0,
) -> list[TrackRow]:
    """Run the k-of-n policy over every track against a random gallery of each size drawn from ``pool``.

    ``pool`` (G, d) holds one template per gallery person ``pool_ids`` (none of them a track's person);
    ``distance_thresholds`` is one distance for all tracks or one per track (cross-fitted). Each track gets
    its own gallery draw (without replacement; seeded), so the rate is an average over galleries of that
    size rather than the luck of one gallery.
    """
    shots = np.asarray(tracks.shots, dtype=np.float64)
    n_tracks, n_shots, dim = shots.shape
    if n_shots != n:
        raise ValueError(f"tracks have {n_shots} shots; the measured rule needs n={n} (one full window)")
    ids = list(pool_ids)
    if len(ids) != len(pool) or len(set(ids)) != len(ids):
        raise ValueError("pool_ids must name each pool template once")
    if set(ids) & set(tracks.persons):
        raise ValueError("a track's person is in the gallery pool: the tracks would not be impostors")
    thresholds = np.broadcast_to(np.asarray(distance_thresholds, dtype=np.float64), (n_tracks,))
    dist = _distances(shots.reshape(-1, dim), pool, metric).reshape(n_tracks, n_shots, len(ids))
    config = PolicyConfig(k=k, n=n, cooldown_s=0.0)
    rng = np.random.default_rng(seed)
    rows = []
    for size in gallery_sizes:
        if not 1 <= size <= len(ids):
            raise ValueError(f"gallery size {size} outside 1..{len(ids)} (the pool)")
        flagged = 0
        shot_hits = 0
        policies: dict[float, MatchPolicy] = {}
        for t in range(n_tracks):
            picks = rng.choice(len(ids), size=size, replace=False)
            sub = dist[t][:, picks]
            best = sub.argmin(axis=1)
            threshold = float(thresholds[t])
            policy = policies.get(threshold) or policies.setdefault(threshold, MatchPolicy(config, threshold))
            hit = False
            for j in range(n_shots):
                d = float(sub[j, best[j]])
                shot_hits += d <= threshold
                result = ShotResult(float(j), ((ids[picks[best[j]]], d),))
                hit = bool(policy.observe(t, result)) or hit
            policy.end_track(t)
            flagged += hit
        shot_fpir = shot_hits / (n_tracks * n_shots)
        rows.append(
            TrackRow(
                gallery_size=int(size),
                tracks=n_tracks,
                persons=len(set(tracks.persons)),
                flagged=flagged,
                rate=flagged / n_tracks,
                upper95=clopper_pearson(flagged, n_tracks)[1],
                shot_fpir=shot_fpir,
                independent_rate=independent_rate(shot_fpir, k, n),
            )
        )
    return rows


def person_fold(person: str, folds: int, seed: int = 0) -> int:
    """Seeded hash fold of a person: the same person is in the same fold in every run."""
    return int.from_bytes(_stable_rank(seed, f"fold/{person}")[:8], "big") % folds


def crossfit_thresholds(
    calib_emb: NDArray[Any], calib_persons: Sequence[str], fmr: float, metric: Metric, folds: int, seed: int = 0
) -> list[float]:
    """Per fold, the distance threshold at per-comparison ``fmr`` over all impostor pairs of the *other* folds."""
    if folds < 2:
        raise ValueError("cross-fitting needs at least 2 folds")
    emb = np.asarray(calib_emb)
    fold = np.array([person_fold(p, folds, seed) for p in calib_persons])
    out = []
    for f in range(folds):
        keep = fold != f
        _, impostor = all_pairs_scores(emb[keep], [p for p, k in zip(calib_persons, keep, strict=True) if k], metric)
        sim = threshold_at_fmr(impostor, fmr)
        out.append(-sim if metric == "l2" else 1.0 - sim)
    return out
