"""Open-set 1:N identification: enrolled and non-enrolled probes against a gallery.

Split (deterministic, by a seeded hash of the person's name): a fraction of persons is enrolled with
their first image as the gallery template; up to ``max_probes`` further images of each enrolled person
are mated probes. Every other person contributes their first image as a non-mated probe: someone the
system has never been told about, the bystander a watchlist must not flag. Scores are exact (a matrix
product), so this measures the recognition, not the index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import StreamprocError
from streamproc.eval.cache import EmbeddingCache
from streamproc.eval.embedding import embed_images
from streamproc.eval.openset_metrics import OpenSetResult, fnir_at_fpir, open_set_at_threshold
from streamproc.types import Metric
from streamproc.vision.faces import FaceAnalyzer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Split:
    gallery: list[tuple[str, Path]]
    mated: list[tuple[str, Path]]
    nonmated: list[tuple[str, Path]]


@dataclass(frozen=True)
class IdentificationResult:
    split_counts: dict[str, int]
    failed_images: int
    at_fpir: dict[str, OpenSetResult]
    at_threshold: OpenSetResult | None
    distance_threshold: float | None
    metric: Metric


def _enrolled(name: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_persons(
    images_dir: Path, fraction: float, seed: int, max_probes: int, max_persons: int | None = None
) -> Split:
    persons = sorted(p for p in images_dir.iterdir() if p.is_dir())
    if max_persons is not None:
        persons = sorted(persons, key=lambda p: hashlib.sha256(f"{seed}/{p.name}".encode()).digest())[:max_persons]
        persons.sort()
    gallery, mated, nonmated = [], [], []
    for person in persons:
        photos = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            continue
        if _enrolled(person.name, seed, fraction):
            gallery.append((person.name, photos[0]))
            mated += [(person.name, p) for p in photos[1 : 1 + max_probes]]
        else:
            nonmated.append((person.name, photos[0]))
    if not gallery or not mated or not nonmated:
        raise StreamprocError(
            f"{images_dir}: the split left {len(gallery)} enrolled, {len(mated)} mated and {len(nonmated)} "
            "non-mated probes; need person folders with several photos each"
        )
    return Split(gallery, mated, nonmated)


def _similarity(probes: NDArray[np.float32], gallery: NDArray[np.float32], metric: Metric) -> NDArray[np.float64]:
    if metric == "cosine":
        return (probes @ gallery.T).astype(np.float64)
    sq = (probes**2).sum(1)[:, None] + (gallery**2).sum(1)[None, :] - 2 * probes @ gallery.T
    return np.asarray(-np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


def run_identification(
    split: Split,
    analyzer: FaceAnalyzer,
    cache: EmbeddingCache | None,
    fpirs: dict[str, float],
    distance_threshold: float | None,
    progress: Callable[[int, int], None] | None = None,
) -> IdentificationResult:
    """Embed everything, then FNIR at each FPIR and, given a threshold, the false candidates it lets through.

    A gallery photo without a face leaves that person unenrolled (their probes become unmatchable, counted
    against FNIR); a probe without a face is never a candidate (rank-1 score -inf).
    """
    everything = split.gallery + split.mated + split.nonmated
    vectors = embed_images([p for _, p in everything], analyzer, cache, progress)
    metric = analyzer.embedder.identity.metric
    dim = analyzer.embedder.identity.dim
    n_g, n_m = len(split.gallery), len(split.mated)
    gal_ok = [i for i in range(n_g) if vectors[i] is not None]
    gallery = np.stack([v for v in vectors[:n_g] if v is not None]) if gal_ok else np.zeros((0, dim), np.float32)
    gallery_ids = [split.gallery[i][0] for i in gal_ok]
    probes = split.mated + split.nonmated
    probe_vecs = vectors[n_g:]
    filled = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in probe_vecs])
    scores = _similarity(filled, gallery, metric)
    scores[[i for i, v in enumerate(probe_vecs) if v is None]] = -np.inf
    # Mated means "enrolled in the split", judged before detection: a person whose gallery photo had no
    # face stays mated, and their probes are certain misses.
    names = np.array([name for name, _ in probes])
    mated = np.isin(names, [name for name, _ in split.gallery])
    if gallery.shape[0]:
        top = np.argmax(scores, axis=1)
        best = scores[np.arange(len(probes)), top]
        right = np.array(gallery_ids)[top] == names
    else:
        best = np.full(len(probes), -np.inf)
        right = np.zeros(len(probes), np.bool_)
    correct, mated_best, nonmated_best = right[mated], best[mated], best[~mated]
    at_fpir = {key: fnir_at_fpir(correct, mated_best, nonmated_best, fpir) for key, fpir in fpirs.items()}
    at_threshold = None
    if distance_threshold is not None:
        sim = -distance_threshold if metric == "l2" else 1.0 - distance_threshold
        at_threshold = open_set_at_threshold(correct, mated_best, nonmated_best, sim)
    return IdentificationResult(
        split_counts={"gallery": n_g, "mated_probes": n_m, "nonmated_probes": len(split.nonmated)},
        failed_images=sum(v is None for v in vectors),
        at_fpir=at_fpir,
        at_threshold=at_threshold,
        distance_threshold=distance_threshold,
        metric=metric,
    )
