"""Open-set replay with label-free score normalisation: does a cohort hold the FPIR budget and raise TAR?

The split, gallery, probes and calibration draws of ``bench/open_set.py`` (same seed and sizes; SFace default).
Each method turns a probe's similarities to the gallery into one rank-1 score; the FPIR 1e-3 threshold is set
on that score for the calibration set's simulated non-mated searches (each calibration image against a random
gallery of the real gallery's size drawn from other calibration persons, or of all of them when there are
fewer, the target carried to that size, as :func:`streamproc.eval.openset.calibrate_fpir` does, seed 0),
then replayed unchanged on the held-out probes against the real gallery.
No demographic label is used anywhere; persons' names only say which pairs are mated.

Methods (``s1 >= s2 >= ...``: a probe's similarities to the gallery, best first):

- ``raw``: ``s1`` (reproduces ``open_set.py``);
- ``margin``: ``s1 - s2``, the rank-1 vs rank-2 margin;
- ``tnormK``: ``(s1 - mean(s2..s(K+1))) / std(s2..s(K+1))``, T-norm with the probe's own top-K non-best
  gallery scores as the cohort (the gallery is the cohort: nothing else ships);
- ``asnormK``: symmetric adaptive S-norm with a fixed cohort of calibration faces: every pair's
  ``((s - mu_p)/sd_p + (s - mu_g)/sd_g) / 2``, ``mu``/``sd`` over a face's top-K cohort scores; calibration faces
  are normalised by the other half of the calibration persons (by name hash), probes and gallery by half 0;
- ``fair+...``: the same on fair-map scores (:mod:`streamproc.search.fairscore`, shipped settings, fitted on
  the calibration faces only, as ``bench/open_set_fair.py`` does).

Each row: the threshold's calibration count, the non-enrolled probes flagged on replay and the enrolled probes'
TAR (rank-1 right and within the threshold), both with 95% Clopper-Pearson intervals; then, descriptively (read
off the replay itself, not a calibration), the TAR at the strictest point where <= 5 non-enrolled probes are
flagged and the flags at TAR 0.75: how well the score could separate the two at best. With several
``--seeds`` (other person-disjoint splits of the same data, each replayed on its own held-out probes) the
counts are pooled at the end. Last line, for ``--method`` (default ``fair+tnorm50``, pooled over the seeds;
the threshold of the last seed): ``false_flags=<n> nonenrolled_probes=<n> tar=<x.xx> threshold=<score>``.

    python bench/open_set_cohort.py [--data ../shared/data] [--seeds 0,1,2,3,4] [--method fair+tnorm50]
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from open_set import embed_split

from streamproc.cli.common import recognition_config
from streamproc.eval.fairness import DEFAULT_CLUSTERS, DEFAULT_LOOKALIKE, DEFAULT_MAX_PER_PERSON, DEFAULT_MEMBERS
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.metrics import all_pairs_scores
from streamproc.eval.openset import fpir_point, gallery_draws, split_open_set
from streamproc.runtime.build import build_analyzer
from streamproc.search.fairscore import FairScoreMap, fit_fair_map
from streamproc.vision.faces import FaceAnalyzer

TARGET_FPIR = 1e-3
Matrix = NDArray[np.float64]
# A method: (calibration rank-1 scores (n_cal,), replay rank-1 scores (P,), replay rank-1 gallery index (P,)).
Method = Callable[["Protocol"], tuple[Matrix, Matrix, NDArray[np.int64]]]
TOP_K = (10, 50, 200)
ASNORM_K = 100
BUDGET_FLAGS = 5  # 0.2% of ~2,500 non-enrolled probes, the target


@dataclass(frozen=True)
class Protocol:
    """Similarities of one scoring (raw or fair map), as the methods need them.

    ``calib``: (n_cal, M) each calibration image against its simulated gallery of M; ``replay``: (P, G)
    probes (enrolled first) against the real gallery; ``picks``: (n_cal, M)
    calibration indices of the simulated galleries' members (for the gallery side of AS-norm).
    """

    calib: Matrix
    replay: Matrix
    picks: NDArray[np.int64]


@dataclass(frozen=True)
class Row:
    """One method's calibrated replay and descriptive separation."""

    threshold: float
    calib_hits: int
    n_searches: int
    flagged: int
    wrong_enrolled: int
    tar: float
    tar_at_budget: float
    flags_at_tar75: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds; several are pooled at the end")
    parser.add_argument("--gallery-size", type=int, default=2500)
    parser.add_argument("--enrolled", type=int, default=300)
    parser.add_argument("--method", default="fair+tnorm50")
    args = parser.parse_args()
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")

    cfg = recognition_config(None, None, None, None)
    analyzer = build_analyzer(cfg)
    if analyzer.embedder.identity.metric != "cosine":
        parser.error("this bench normalises cosine similarities; the default embedder (SFace) is cosine")
    per_seed = [_one_split(args, seed, analyzer, cfg.models.cache_dir) for seed in seeds]
    names = list(per_seed[0][0])
    if args.method not in names:
        parser.error(f"--method must be one of {', '.join(names)}")
    n_nonmated = sum(n for _, n, _ in per_seed)
    n_mated = sum(m for _, _, m in per_seed)
    if len(seeds) > 1:
        print(f"pooled over seeds {args.seeds}: {n_nonmated} non-enrolled, {n_mated} enrolled probes")
        print(
            f"{'method':>16} | non-enrolled flagged [95% CI] | wrong-enrolled | TAR [95% CI] | per seed flagged / TAR"
        )
        for name in names:
            rows = [r[name] for r, _, _ in per_seed]
            flagged = sum(r.flagged for r in rows)
            hits = sum(round(r.tar * m) for r, (_, _, m) in zip(rows, per_seed, strict=True))
            lo, hi = clopper_pearson(flagged, n_nonmated)
            tlo, thi = clopper_pearson(hits, n_mated)
            each = " ".join(f"{r.flagged}/{r.tar:.2f}" for r in rows)
            print(
                f"{name:>16} | {flagged:3d} of {n_nonmated} ({flagged / n_nonmated:.4f}) [{lo:.4f}, {hi:.4f}] | "
                f"{sum(r.wrong_enrolled for r in rows)} | {hits / n_mated:.4f} [{tlo:.3f}, {thi:.3f}] | {each}"
            )
    chosen = [r[args.method] for r, _, _ in per_seed]
    hits = sum(round(r.tar * m) for r, (_, _, m) in zip(chosen, per_seed, strict=True))
    print(f"method {args.method}" + (f", pooled over seeds {args.seeds}" if len(seeds) > 1 else ""))
    print(
        f"false_flags={sum(r.flagged + r.wrong_enrolled for r in chosen)} nonenrolled_probes={n_nonmated} "
        f"tar={hits / n_mated:.2f} threshold={chosen[-1].threshold:.4f}"
    )


def _one_split(
    args: argparse.Namespace, seed: int, analyzer: FaceAnalyzer, cache_dir: Path | None
) -> tuple[dict[str, Row], int, int]:
    """Every method on one seeded split: (rows by method, non-enrolled probes, enrolled probes)."""
    split = split_open_set(
        args.data / "identity" / "lfw", args.data / "demographic" / "utkface", seed, args.gallery_size, args.enrolled
    )
    calib, gallery, enrolled, nonenrolled = embed_split(split, analyzer, False, cache_dir)
    cal = _unit(np.stack([v for _, v in calib]))
    gal = _unit(np.stack([v for _, v in gallery]))
    probes = _unit(np.stack([v for _, v in enrolled + nonenrolled]))
    cal_ids = np.asarray([p for p, _ in calib])
    gal_ids = np.asarray([p for p, _ in gallery])
    probe_ids = np.asarray([p for p, _ in enrolled + nonenrolled])
    mated = np.isin(probe_ids, gal_ids)
    print(
        f"seed {seed}: calibration {len(cal)} faces of {np.unique(cal_ids).size} persons; gallery {len(gal)}; "
        f"probes {int(mated.sum())} enrolled, {int((~mated).sum())} non-enrolled"
    )

    picks = np.stack(list(gallery_draws(list(cal_ids), min(len(gal), np.unique(cal_ids).size - 1), seed)))
    cal_cal = cal @ cal.T
    raw = Protocol(_drawn(cal_cal, picks), probes @ gal.T, picks)
    fmap = fit_fair_map(
        cal.astype(np.float32),
        list(cal_ids),
        "cosine",
        all_pairs_scores(cal, list(cal_ids), "cosine")[1],
        n_clusters=DEFAULT_CLUSTERS,
        lookalike=DEFAULT_LOOKALIKE,
        members=DEFAULT_MEMBERS,
        seed=0,
        max_per_person=DEFAULT_MAX_PER_PERSON,
    )
    fair = Protocol(_drawn(_fair(fmap, cal, cal, cal_cal), picks), _fair(fmap, probes, gal, raw.replay), picks)
    halves = np.asarray([hashlib.sha256(p.encode()).digest()[0] & 1 for p in cal_ids])
    methods: dict[str, Method] = {"raw": _row_method(lambda s: s[:, 0])}
    methods["margin"] = _row_method(lambda s: s[:, 0] - s[:, 1])
    for k in TOP_K:
        methods[f"tnorm{k}"] = _row_method(_tnorm(k))
    methods[f"asnorm{ASNORM_K}"] = _cohort_stats(cal, cal_cal, halves, probes, gal, ASNORM_K)
    rows: dict[str, Row] = {}
    print(
        f"{'method':>16} | threshold (calib hits) | non-enrolled flagged [95% CI] | wrong-enrolled | TAR [95% CI] | "
        f"descriptive: TAR at <= {BUDGET_FLAGS} flags; flags at TAR 0.75"
    )
    for scoring, protocol in (("", raw), ("fair+", fair)):
        for name, method in methods.items():
            if scoring and name.startswith("asnorm"):
                continue  # AS-norm's cohort statistics are raw similarities; not combined with the map
            key = scoring + name
            rows[key] = _evaluate(protocol, method, gal_ids, probe_ids, mated)
            _print_row(key, rows[key], int((~mated).sum()), int(mated.sum()))
    return rows, int((~mated).sum()), int(mated.sum())


def _unit(x: NDArray[np.floating]) -> Matrix:
    v = np.asarray(x, dtype=np.float64)
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float64)


def _drawn(square: Matrix, picks: NDArray[np.int64]) -> Matrix:
    """Each row's similarities to its drawn gallery; an image drawn more than once is kept once (-inf after)."""
    srt = np.sort(picks, axis=1)
    out = np.take_along_axis(square, srt, axis=1)
    out[:, 1:][srt[:, 1:] == srt[:, :-1]] = -np.inf
    return out


def _fair(fmap: FairScoreMap, a: Matrix, b: Matrix, sims: Matrix, block: int = 256) -> Matrix:
    """Fair-map similarities (``1 - calibrated cosine distance``) of every pair in ``sims`` (len(a), len(b))."""
    ca, cb = fmap.assign(a.astype(np.float32)), fmap.assign(b.astype(np.float32))
    out = np.empty_like(sims)
    for r0 in range(0, sims.shape[0], block):
        s = sims[r0 : r0 + block]
        rows, cols = np.indices(s.shape)
        d = fmap.calibrate(ca[r0 : r0 + block][rows.ravel()], cb[cols.ravel()], (1.0 - s).ravel())
        out[r0 : r0 + block] = 1.0 - d.reshape(s.shape)
    return out


def _row_method(score: Callable[[Matrix], Matrix]) -> Method:
    """A method that only re-scores each row's best similarity from its sorted row (rank-1 unchanged)."""

    def run(p: Protocol) -> tuple[Matrix, Matrix, NDArray[np.int64]]:
        best = np.argmax(p.replay, axis=1)
        return score(-np.sort(-p.calib, axis=1)), score(-np.sort(-p.replay, axis=1)), best

    return run


def _tnorm(k: int) -> Callable[[Matrix], Matrix]:
    def score(s: Matrix) -> Matrix:
        cohort = s[:, 1 : k + 1]
        return np.asarray((s[:, 0] - cohort.mean(axis=1)) / cohort.std(axis=1), dtype=np.float64)

    return score


def _topk(sims: Matrix, k: int) -> tuple[Matrix, Matrix]:
    top = -np.partition(-sims, k - 1, axis=1)[:, :k]
    return top.mean(axis=1), top.std(axis=1)


def _cohort_stats(
    cal: Matrix, cal_cal: Matrix, halves: NDArray[np.int64], probes: Matrix, gal: Matrix, k: int
) -> Method:
    """AS-norm (symmetric, top-``k`` cohort): calibration faces against the other half of the calibration
    persons, probes and gallery against half 0. Returns the method (it re-ranks, so it needs whole rows)."""
    mu = np.empty(len(cal))
    sd = np.empty(len(cal))
    for h in (0, 1):
        rows, cols = np.flatnonzero(halves == h), np.flatnonzero(halves != h)
        mu[rows], sd[rows] = _topk(cal_cal[np.ix_(rows, cols)], k)
    cohort = cal[halves == 0]
    mu_p, sd_p = _topk(probes @ cohort.T, k)
    mu_g, sd_g = _topk(gal @ cohort.T, k)

    def run(p: Protocol) -> tuple[Matrix, Matrix, NDArray[np.int64]]:
        srt = np.sort(p.picks, axis=1)  # the column order of ``p.calib`` (see :func:`_drawn`)
        c = 0.5 * ((p.calib - mu[:, None]) / sd[:, None] + (p.calib - mu[srt]) / sd[srt])
        r = 0.5 * ((p.replay - mu_p[:, None]) / sd_p[:, None] + (p.replay - mu_g[None, :]) / sd_g[None, :])
        return c.max(axis=1), r.max(axis=1), np.argmax(r, axis=1)

    return run


def _evaluate(
    p: Protocol,
    method: Method,
    gal_ids: NDArray[np.str_],
    probe_ids: NDArray[np.str_],
    mated: NDArray[np.bool_],
) -> Row:
    calib_top, top, best = method(p)
    correct = gal_ids[best] == probe_ids
    point = fpir_point(calib_top, TARGET_FPIR, gal_ids.size, p.picks.shape[1])
    t = point.threshold
    hit = top >= t
    nonmated = np.sort(top[~mated])[::-1]
    at_budget = nonmated[BUDGET_FLAGS]  # strictly above the next one: at most BUDGET_FLAGS flagged
    good = np.sort(top[mated & correct])[::-1]
    t75 = good[int(np.ceil(0.75 * mated.sum())) - 1]
    return Row(
        threshold=t,
        calib_hits=point.false_alarms,
        n_searches=point.n_searches,
        flagged=int(np.count_nonzero(hit & ~mated)),
        wrong_enrolled=int(np.count_nonzero(hit & mated & ~correct)),
        tar=float(np.count_nonzero(hit & mated & correct) / mated.sum()),
        tar_at_budget=float(np.count_nonzero((top > at_budget) & mated & correct) / mated.sum()),
        flags_at_tar75=int(np.count_nonzero((top >= t75) & ~mated)),
    )


def _print_row(name: str, r: Row, n_nonmated: int, n_mated: int) -> None:
    lo, hi = clopper_pearson(r.flagged, n_nonmated)
    tar_k = round(r.tar * n_mated)
    tlo, thi = clopper_pearson(tar_k, n_mated)
    print(
        f"{name:>16} | {r.threshold:9.4f} ({r.calib_hits}/{r.n_searches}) | {r.flagged:3d} of {n_nonmated} "
        f"[{lo:.4f}, {hi:.4f}] | {r.wrong_enrolled} | {r.tar:.4f} [{tlo:.3f}, {thi:.3f}] | "
        f"{r.tar_at_budget:.4f}; {r.flags_at_tar75}"
    )


if __name__ == "__main__":
    main()
