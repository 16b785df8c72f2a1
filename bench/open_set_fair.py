"""Open-set replay through the fair score map: does the false-alarm budget hold when every comparison goes
through a map fitted without labels on the calibration set only?

The split, gallery and probes of ``bench/open_set.py`` (same seed and sizes). A fair map
(:mod:`streamproc.search.fairscore`, the shipped settings: K = 16, look-alikes 5%, 4 partitions) is fitted on
the calibration set's faces alone (LFW persons + UTKFace faces, no group label), on the scale of the
calibration set's own impostor pairs; the FPIR 1e-3 threshold is then set on *calibrated* non-mated top-1
scores of the calibration set (each image against a random gallery of the real gallery's size), and the
probes are replayed against the real gallery with every probe-template comparison calibrated. Single-photo
probes only (no track level). Printed beside the same protocol on raw scores. Last line:
``false_flags=<n> nonenrolled_probes=<n> tar=<x.xx> threshold=<calibrated distance>`` (with the map).

    python bench/open_set_fair.py [--data ../shared/data] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from open_set import embed_split

from streamproc.cli.common import recognition_config
from streamproc.eval.fairness import DEFAULT_CLUSTERS, DEFAULT_LOOKALIKE, DEFAULT_MAX_PER_PERSON, DEFAULT_MEMBERS
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.metrics import all_pairs_scores
from streamproc.eval.openset import fpir_point, nonmated_top1, similarity_matrix, split_open_set
from streamproc.eval.openset_metrics import open_set_at_threshold, rank1_split
from streamproc.runtime.build import build_analyzer
from streamproc.search.calibration import similarity_to_distance
from streamproc.search.fairscore import FairScoreMap, fit_fair_map
from streamproc.types import Metric

TARGET_FPIR = 1e-3
Scorer = Callable[[NDArray[np.float32], NDArray[np.float32]], NDArray[np.float64]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery-size", type=int, default=2500)
    parser.add_argument("--enrolled", type=int, default=300)
    args = parser.parse_args()

    cfg = recognition_config(None, None, None, None)
    analyzer = build_analyzer(cfg)
    metric = analyzer.embedder.identity.metric
    split = split_open_set(
        args.data / "identity" / "lfw",
        args.data / "demographic" / "utkface",
        args.seed,
        args.gallery_size,
        args.enrolled,
    )
    calib, gallery, enrolled, nonenrolled = embed_split(split, analyzer, False, cfg.models.cache_dir)
    cal_emb = np.stack([v for _, v in calib]).astype(np.float32)
    cal_persons = [p for p, _ in calib]
    print(
        f"calibration {len(calib)} faces of {len(set(cal_persons))} persons; gallery {len(gallery)}; probes "
        f"{len(enrolled)} enrolled, {len(nonenrolled)} non-enrolled"
    )

    impostor = all_pairs_scores(cal_emb, cal_persons, metric)[1]
    fmap = fit_fair_map(
        cal_emb,
        cal_persons,
        metric,
        impostor,
        n_clusters=DEFAULT_CLUSTERS,
        lookalike=DEFAULT_LOOKALIKE,
        members=DEFAULT_MEMBERS,
        seed=0,
        max_per_person=DEFAULT_MAX_PER_PERSON,
    )
    print(f"fair map fitted on the calibration set only ({len(calib)} faces, no label)")

    def raw(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
        return similarity_matrix(a, b, metric)

    def fair(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
        return _fair_matrix(fmap, a, b, metric)

    result = ""
    for name, score in (("raw", raw), ("fair map", fair)):
        result = _replay(name, score, cal_emb, cal_persons, gallery, enrolled, nonenrolled, metric, args.seed)
    print(result)


def _fair_matrix(
    fmap: FairScoreMap, a: NDArray[np.float32], b: NDArray[np.float32], metric: Metric, block: int = 256
) -> NDArray[np.float64]:
    """``(len(a), len(b))`` calibrated similarities (``1 - calibrated distance`` for cosine, ``-distance`` L2)."""
    ca, cb = fmap.assign(a), fmap.assign(b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    for r0 in range(0, a.shape[0], block):
        s = similarity_matrix(a[r0 : r0 + block], b, metric)
        rows, cols = np.indices(s.shape)
        raw = (1.0 - s if metric == "cosine" else -s).ravel()
        d = fmap.calibrate(ca[r0 : r0 + block][rows.ravel()], cb[cols.ravel()], raw).reshape(s.shape)
        out[r0 : r0 + block] = 1.0 - d if metric == "cosine" else -d
    return out


def _replay(
    name: str,
    score: Scorer,
    cal_emb: NDArray[np.float32],
    cal_persons: list[str],
    gallery: list[tuple[str, NDArray[np.float32]]],
    enrolled: list[tuple[str, NDArray[np.float32]]],
    nonenrolled: list[tuple[str, NDArray[np.float32]]],
    metric: Metric,
    seed: int,
) -> str:
    searched = min(len(gallery), len(set(cal_persons)) - 1)
    top1 = nonmated_top1(cal_emb, cal_persons, searched, metric, seed, block=256, score=score)
    point = fpir_point(top1, TARGET_FPIR, len(gallery), searched)
    gal_emb = np.stack([v for _, v in gallery]).astype(np.float32)
    probes = enrolled + nonenrolled
    sims = score(np.stack([v for _, v in probes]).astype(np.float32), gal_emb)
    correct, mated, nonmated = rank1_split(sims, [p for p, _ in gallery], [p for p, _ in probes])
    at = open_set_at_threshold(correct, mated, nonmated, point.threshold)
    flagged = round(at.fpir * at.n_nonmated)
    distance = similarity_to_distance(point.threshold, metric)
    print(
        f"{name}: threshold distance <= {distance:.4f} (FPIR {TARGET_FPIR:g} on {point.n_searches} calibration "
        f"searches); non-enrolled probes flagged {flagged} of {at.n_nonmated} (FPIR {at.fpir:.5f}, 95% upper "
        f"{clopper_pearson(flagged, at.n_nonmated)[1]:.5f}); enrolled flagged with the wrong person "
        f"{at.false_candidates - flagged} of {at.n_mated}; TAR {1.0 - at.fnir:.4f}"
    )
    return (
        f"false_flags={at.false_candidates} nonenrolled_probes={at.n_nonmated} tar={1.0 - at.fnir:.2f} "
        f"threshold={distance:.4f}"
    )


if __name__ == "__main__":
    main()
