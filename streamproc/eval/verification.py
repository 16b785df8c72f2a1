"""LFW-style 1:1 verification of the configured detector + embedder on real photos.

Protocol (see ``streamproc evaluate verification --help``): every image is embedded once (its central
face, no quality gate, no rescue); a pair with an image where no face was found is scored as a certain
non-match. k-fold accuracy and TAR at FMR come from the pairs file; ``all pairs`` rates use every
same-person pair as genuine and every cross-person pair as an impostor among all images involved, which
puts millions of impostors behind FMR 1e-4 / 1e-5 instead of 1,500.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamproc.eval.cache import EmbeddingCache
from streamproc.eval.embedding import embed_images
from streamproc.eval.metrics import all_pairs_scores, auc, kfold_accuracy, tar_at_fmr, threshold_at_fmr
from streamproc.eval.pairs import parse_pairs
from streamproc.eval.report import VerificationReport
from streamproc.types import Metric
from streamproc.vision.faces import FaceAnalyzer

PAIR_FMRS = {"1e-2": 1e-2, "1e-3": 1e-3}
ALL_PAIR_FMRS = {"1e-3": 1e-3, "1e-4": 1e-4, "1e-5": 1e-5}


@dataclass(frozen=True)
class VerificationResult:
    report: VerificationReport
    genuine: NDArray[np.float64]  # pair-protocol similarity scores
    impostor: NDArray[np.float64]
    all_thresholds: dict[str, float]  # all-pairs similarity thresholds by FMR key
    all_accepted: dict[str, int]  # impostor pairs at or above each threshold
    all_n_impostor: int
    metric: Metric


def similarity(a: NDArray[np.float32], b: NDArray[np.float32], metric: Metric) -> float:
    """Higher = more alike: cosine of unit vectors, or minus the Euclidean distance."""
    if metric == "cosine":
        return float(np.dot(a, b))
    return -float(np.linalg.norm(a - b))


def run_verification(
    pairs_file: Path,
    images_dir: Path,
    analyzer: FaceAnalyzer,
    cache: EmbeddingCache | None,
    name: str,
    extra: dict[str, str],
    progress: Callable[[int, int], None] | None = None,
    all_pairs: bool = True,
) -> VerificationResult:
    pairs = parse_pairs(pairs_file)
    keys = sorted({p.left for p in pairs} | {p.right for p in pairs})
    vectors = embed_images([images_dir / k for k in keys], analyzer, cache, progress)
    by_key = dict(zip(keys, vectors, strict=True))
    metric = analyzer.embedder.identity.metric
    raw = [
        similarity(va, vb, metric)
        if (va := by_key[p.left]) is not None and (vb := by_key[p.right]) is not None
        else None
        for p in pairs
    ]
    finite = [s for s in raw if s is not None]
    floor = (min(finite) if finite else 0.0) - 1.0  # a failed detection scores below every real pair
    scores = np.array([floor if s is None else s for s in raw], dtype=np.float64)
    same = np.array([p.same for p in pairs], dtype=np.bool_)
    folds = np.array([p.fold for p in pairs], dtype=np.int64)
    genuine, impostor = scores[same], scores[~same]
    acc_mean, acc_std, fold_acc = kfold_accuracy(scores, same, folds)
    tar: dict[str, float] = {}
    thr: dict[str, float] = {}
    for key, fmr in PAIR_FMRS.items():
        tar[key], thr[key] = tar_at_fmr(genuine, impostor, fmr)
    n_failed = sum(v is None for v in vectors)

    all_stats: dict[str, float] | None = None
    all_thr: dict[str, float] = {}
    all_acc: dict[str, int] = {}
    n_all_imp = 0
    if all_pairs:
        all_stats, all_thr, all_acc, n_all_imp = _all_pairs(keys, vectors, metric)
    report = VerificationReport(
        name=name,
        n_pairs=len(pairs),
        n_genuine=int(same.sum()),
        n_impostor=int((~same).sum()),
        n_folds=int(folds.max()) + 1,
        accuracy_mean=acc_mean,
        accuracy_std=acc_std,
        fold_accuracies=fold_acc,
        tar_at_fmr=tar,
        threshold_at_fmr=thr,
        all_pairs=all_stats,
        failure_to_detect=n_failed / len(keys),
        n_images=len(keys),
        n_failed_images=n_failed,
        auc=auc(genuine, impostor),
        extra=extra,
    )
    return VerificationResult(report, genuine, impostor, all_thr, all_acc, n_all_imp, metric)


def _all_pairs(
    keys: list[str], vectors: list[NDArray[np.float32] | None], metric: Metric
) -> tuple[dict[str, float], dict[str, float], dict[str, int], int]:
    """All-pairs TAR at FMR 1e-3..1e-5; images without a face count as rejected pairs."""
    person = [k.split("/")[0] for k in keys]
    found = [i for i, v in enumerate(vectors) if v is not None]
    emb = np.stack([v for v in vectors if v is not None]) if found else np.zeros((0, 1), np.float32)
    genuine, impostor = all_pairs_scores(emb, [person[i] for i in found], metric)
    # Totals over every image, detected or not: pairs with an undetected image are rejections.
    n = len(keys)
    n_gen = sum(c * (c - 1) // 2 for c in Counter(person).values())
    n_imp = n * (n - 1) // 2 - n_gen
    stats: dict[str, float] = {"n_genuine": float(n_gen), "n_impostor": float(n_imp)}
    thresholds: dict[str, float] = {}
    accepted: dict[str, int] = {}
    for key, fmr in ALL_PAIR_FMRS.items():
        # floor(fmr * n_imp) impostors may pass; the rejected ones cannot, so pad with a sentinel count.
        allowed = int(np.floor(fmr * n_imp))
        t = _threshold_allowing(impostor, allowed)
        thresholds[key] = t
        accepted[key] = int(np.count_nonzero(impostor >= np.float64(t)))
        stats[f"TAR@FMR{key}"] = float(np.count_nonzero(genuine >= t)) / n_gen if n_gen else float("nan")
    return stats, thresholds, accepted, int(n_imp)


def _threshold_allowing(impostor: NDArray[np.float32], allowed: int) -> float:
    """Most permissive threshold with at most ``allowed`` impostors at or above it."""
    if impostor.size == 0:
        return float("-inf")
    fmr = (allowed + 0.5) / impostor.size if allowed < impostor.size else 1.0
    return threshold_at_fmr(impostor, min(fmr, 1.0))
