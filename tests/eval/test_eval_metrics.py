"""Hand-checked tables and brute-force cross-checks for streamproc.eval.metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from streamproc.eval.metrics import (
    all_pairs_scores,
    allowed_count,
    auc,
    det_curve,
    kfold_accuracy,
    roc_curve,
    tar_at_fmr,
    threshold_at_fmr,
)


def up(x: float) -> float:
    """The smallest float64 above x."""
    return float(np.nextafter(x, math.inf))


def f64(values: list[float]) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


# Small score sets with many ties: the cases where off-by-one threshold bugs live.
tied_scores = st.lists(st.integers(-3, 3).map(lambda v: v / 2), min_size=1, max_size=30)


# --------------------------------------------------------------------------- threshold_at_fmr


@pytest.mark.parametrize(
    ("impostor", "fmr", "expected"),
    [
        # allowed = floor(fmr * 4); sorted descending [0.4, 0.3, 0.2, 0.1]
        ([0.1, 0.2, 0.3, 0.4], 0.0, up(0.4)),  # allowed 0: above the max
        ([0.1, 0.2, 0.3, 0.4], 0.1, up(0.4)),  # floor(0.4) = 0
        ([0.1, 0.2, 0.3, 0.4], 0.25, up(0.3)),  # allowed 1: accept 0.4 only
        ([0.1, 0.2, 0.3, 0.4], 0.3, up(0.3)),  # floor(1.2) = 1
        ([0.4, 0.1, 0.3, 0.2], 0.5, up(0.2)),  # order of input irrelevant
        ([0.1, 0.2, 0.3, 0.4], 0.75, up(0.1)),  # allowed 3
        ([0.1, 0.2, 0.3, 0.4], 1.0, -math.inf),  # allowed = n: accept all
        # ties at the boundary cannot be split: fewer than `allowed` get accepted
        ([0.5, 0.5, 0.5, 0.1], 0.25, up(0.5)),  # allowed 1, accepts 0
        ([0.5, 0.5, 0.5, 0.1], 0.5, up(0.5)),  # allowed 2, accepts 0
        ([0.5, 0.5, 0.5, 0.1], 0.75, up(0.1)),  # allowed 3, accepts 3
        ([0.9, 0.5, 0.5, 0.1], 0.5, up(0.5)),  # allowed 2, accepts 1
        ([0.9, 0.9, 0.5, 0.1], 0.5, up(0.5)),  # allowed 2, accepts 2
        ([0.7], 0.0, up(0.7)),
        ([0.7], 0.99, up(0.7)),
        ([-math.inf, 0.2], 0.5, up(-math.inf)),  # -inf scores are never accepted
    ],
)
def test_threshold_at_fmr_table(impostor: list[float], fmr: float, expected: float) -> None:
    t = threshold_at_fmr(f64(impostor), fmr)
    assert t == expected
    assert np.count_nonzero(f64(impostor) >= t) <= math.floor(fmr * len(impostor) + 1e-9)


def test_threshold_at_fmr_reads_the_decimal_rate() -> None:
    # 0.29 * 100 == 28.999999999999996 in binary; the caller meant 29 allowed.
    assert allowed_count(0.29, 100) == 29
    assert threshold_at_fmr(np.arange(100, dtype=np.float64), 0.29) == up(70.0)
    assert allowed_count(1e-3, 6000) == 6
    assert allowed_count(2 / 3, 3) == 2
    assert allowed_count(0.5, 3) == 1
    assert allowed_count(1e-5, 50_000) == 0
    assert allowed_count(1e-5, 84_000_000) == 840


def test_threshold_at_fmr_float32_ties_not_accepted() -> None:
    imp = np.asarray([0.1, 0.2, 0.2], dtype=np.float32)
    t = threshold_at_fmr(imp, 1 / 3)  # allowed 1, but the two 0.2s tie
    boundary = float(np.float32(0.2))
    assert t == up(boundary)
    assert np.count_nonzero(imp >= np.float64(t)) == 0
    assert tar_at_fmr(f64([boundary]), imp, 1 / 3)[0] == 0.0
    assert tar_at_fmr(f64([up(boundary)]), imp, 1 / 3)[0] == 1.0


@given(tied_scores, st.floats(0.0, 1.0))
def test_threshold_at_fmr_is_most_permissive(impostor: list[float], fmr: float) -> None:
    imp = f64(impostor)
    allowed = allowed_count(fmr, imp.size)
    t = threshold_at_fmr(imp, fmr)
    assert np.count_nonzero(imp >= t) <= allowed
    if t != -math.inf:  # one step more permissive breaks the bound
        assert np.count_nonzero(imp >= np.nextafter(t, -math.inf)) > allowed


@pytest.mark.parametrize(
    ("impostor", "fmr"),
    [
        ([], 0.1),
        ([0.1, math.nan], 0.1),
        ([0.1, math.inf], 0.1),
        ([0.1], -0.1),
        ([0.1], 1.5),
        ([0.1], math.nan),
    ],
)
def test_threshold_at_fmr_rejects(impostor: list[float], fmr: float) -> None:
    with pytest.raises(ValueError):
        threshold_at_fmr(f64(impostor), fmr)


# --------------------------------------------------------------------------- tar_at_fmr


@pytest.mark.parametrize(
    ("fmr", "tar", "threshold"),
    [(0.0, 0.25, up(0.4)), (0.25, 0.5, up(0.3)), (0.5, 0.75, up(0.2)), (1.0, 1.0, -math.inf)],
)
def test_tar_at_fmr_table(fmr: float, tar: float, threshold: float) -> None:
    genuine = f64([0.35, 0.3, 0.45, 0.05])
    impostor = f64([0.1, 0.2, 0.3, 0.4])
    assert tar_at_fmr(genuine, impostor, fmr) == (tar, threshold)


def test_tar_at_fmr_rejects_empty_genuine() -> None:
    with pytest.raises(ValueError):
        tar_at_fmr(f64([]), f64([0.1]), 0.1)


# --------------------------------------------------------------------------- kfold_accuracy


def test_kfold_accuracy_separable() -> None:
    scores = f64([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.95, 0.05])
    same = np.asarray([True, False] * 4)
    folds = np.asarray([0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int64)
    mean, std, per_fold = kfold_accuracy(scores, same, folds)
    assert (mean, std, per_fold) == (1.0, 0.0, [1.0, 1.0, 1.0, 1.0])


def test_kfold_accuracy_hand_computed() -> None:
    # Fold 0: train (F1+F2) 0.1D 0.3D 0.45S 0.5S 0.7S 0.8S -> t=0.375 (6/6); on F0: 0.6D fails -> 2/3.
    # Fold 1: train 0.2D 0.3D 0.5S 0.6D 0.7S 0.9S -> 5/6 at t=0.4 and t=0.65; lowest wins,
    #         F1 all right -> 1 (t=0.65 would reject 0.45S).
    # Fold 2: train 0.1D 0.2D 0.45S 0.6D 0.8S 0.9S -> 5/6 at t=0.325 and t=0.7; lowest wins,
    #         F2 all right -> 1 (t=0.7 would reject 0.5S).
    scores = f64([0.9, 0.2, 0.6, 0.8, 0.45, 0.1, 0.7, 0.3, 0.5])
    same = np.asarray([True, False, False, True, True, False, True, False, True])
    folds = np.asarray([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int64)
    mean, std, per_fold = kfold_accuracy(scores, same, folds)
    assert per_fold == pytest.approx([2 / 3, 1.0, 1.0])
    assert mean == pytest.approx(8 / 9)
    assert std == pytest.approx(math.sqrt(2) / 9)  # population std of (-2/9, 1/9, 1/9)


def test_kfold_accuracy_one_class_training_and_labels() -> None:
    # Training folds hold only "same" pairs: "accept all" (-inf) is the best threshold.
    scores = f64([0.2, 0.3, 0.9, 0.1])
    same = np.asarray([True, True, True, False])
    folds = np.asarray([7, 7, 3, 3], dtype=np.int64)
    _, _, per_fold = kfold_accuracy(scores, same, folds)
    # Label order 3, 7: fold 3 trained on {0.2S, 0.3S} -> accept all -> 0.9S ok, 0.1D wrong.
    # Fold 7 trained on {0.9S, 0.1D} -> t=0.5 -> rejects 0.2S and 0.3S.
    assert per_fold == [0.5, 0.0]


@pytest.mark.parametrize(
    ("scores", "same", "folds"),
    [
        ([0.1, 0.2], [True, False], [0, 0]),  # one fold
        ([0.1, math.nan], [True, False], [0, 1]),
        ([0.1, 0.2], [1, 0], [0, 1]),  # not bool
        ([0.1, 0.2], [True, False], [0.0, 1.0]),  # not int
        ([0.1, 0.2], [True], [0, 1]),
    ],
)
def test_kfold_accuracy_rejects(scores: list[float], same: list[Any], folds: list[Any]) -> None:
    with pytest.raises(ValueError):
        kfold_accuracy(f64(scores), np.asarray(same), np.asarray(folds))


# --------------------------------------------------------------------------- roc, det, auc


def test_roc_curve_hand_computed() -> None:
    fmr, fnmr, thresholds = roc_curve(f64([0.3, 0.5]), f64([0.1, 0.3]))
    assert thresholds.tolist() == [0.1, 0.3, 0.5, up(0.5)]
    assert fmr.tolist() == [1.0, 0.5, 0.0, 0.0]
    assert fnmr.tolist() == [0.0, 0.0, 0.5, 1.0]


@given(tied_scores, tied_scores)
def test_roc_curve_matches_definition(genuine: list[float], impostor: list[float]) -> None:
    gen, imp = f64(genuine), f64(impostor)
    fmr, fnmr, thresholds = roc_curve(gen, imp)
    assert np.all(np.diff(thresholds) > 0)
    assert (fmr[0], fnmr[0], fmr[-1], fnmr[-1]) == (1.0, 0.0, 0.0, 1.0)
    for f, fn, t in zip(fmr, fnmr, thresholds, strict=True):
        assert f == np.mean(imp >= t)
        assert fn == np.mean(gen < t)


@given(tied_scores, tied_scores)
def test_det_curve_points_are_threshold_at_fmr_points(genuine: list[float], impostor: list[float]) -> None:
    gen, imp = f64(genuine), f64(impostor)
    fmr, fnmr, thresholds = det_curve(gen, imp, n_points=200)
    assert (fmr[0], fnmr[0], thresholds[0]) == (1.0, 0.0, -math.inf)
    assert np.all(np.diff(thresholds) > 0)
    assert np.all(np.diff(fmr) <= 0) and np.all(np.diff(fnmr) >= 0)
    for f, fn, t in zip(fmr, fnmr, thresholds, strict=True):
        assert f == np.mean(imp >= t)
        assert fn == np.mean(gen < t)
    # With few impostors every allowed count is visited: every achievable FMR appears.
    expected = {threshold_at_fmr(imp, a / imp.size) for a in range(imp.size + 1)}
    assert set(thresholds.tolist()) == expected


def test_det_curve_large_float32_is_log_spaced() -> None:
    rng = np.random.default_rng(1)
    imp = rng.normal(size=100_000).astype(np.float32)
    gen = rng.normal(2.0, 1.0, size=1000)
    fmr, fnmr, thresholds = det_curve(gen, imp, n_points=100)
    assert len(thresholds) <= 101
    assert fmr[-1] == 0.0  # the strictest point rejects every impostor
    assert np.min(fmr[fmr > 0]) == 1e-5
    t = float(thresholds[5])
    assert fmr[5] == np.count_nonzero(imp >= np.float64(t)) / imp.size
    assert fnmr[5] == np.count_nonzero(gen < t) / gen.size


@pytest.mark.parametrize(
    ("genuine", "impostor", "expected"),
    [
        ([1.0], [0.0], 1.0),
        ([0.0], [1.0], 0.0),
        ([1.0], [1.0], 0.5),
        ([0.5, 0.7], [0.5, 0.6], 0.625),  # 0.5 + 0 + 1 + 1 over 4
        ([0.2, 0.2, 0.9], [0.2, -math.inf], 5 / 6),  # 0.2: 0.5 + 1, twice; 0.9: 1 + 1
    ],
)
def test_auc_table(genuine: list[float], impostor: list[float], expected: float) -> None:
    assert auc(f64(genuine), f64(impostor)) == pytest.approx(expected, abs=1e-15)
    assert _brute_auc(f64(genuine), f64(impostor)) == pytest.approx(expected, abs=1e-15)


def _brute_auc(gen: NDArray[np.float64], imp: NDArray[np.float64]) -> float:
    total = 0.0
    for g in gen:
        for i in imp:
            total += 1.0 if g > i else 0.5 if g == i else 0.0
    return total / (gen.size * imp.size)


@given(tied_scores, tied_scores, st.booleans())
def test_auc_matches_brute_force(genuine: list[float], impostor: list[float], imp32: bool) -> None:
    gen, imp = f64(genuine), f64(impostor)
    got = auc(gen, imp.astype(np.float32) if imp32 else imp)
    assert got == pytest.approx(_brute_auc(gen, imp), abs=1e-12)


@given(
    st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=20),
    st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=20),
)
def test_auc_matches_brute_force_continuous(genuine: list[float], impostor: list[float]) -> None:
    gen, imp = f64(genuine), f64(impostor)
    assert auc(gen, imp.astype(np.float32)) == pytest.approx(_brute_auc(gen, imp), abs=1e-12)


# --------------------------------------------------------------------------- all_pairs_scores


def _brute_pairs(
    emb: NDArray[np.float32], ids: list[str], metric: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = emb.astype(np.float64)
    genuine: list[float] = []
    impostor: list[float] = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            a, b = x[i], x[j]
            if metric == "cosine":
                s = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            else:
                s = -float(np.linalg.norm(a - b))
            (genuine if ids[i] == ids[j] else impostor).append(s)
    return f64(genuine), f64(impostor)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("block", [1, 3, 4, 7, 10, 2048])
@pytest.mark.parametrize("n", [2, 10, 11])
def test_all_pairs_scores_matches_double_loop(metric: str, block: int, n: int) -> None:
    rng = np.random.default_rng(n * 100 + block)
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    ids = [f"person{int(v)}" for v in rng.integers(0, 3, size=n)]
    genuine, impostor = all_pairs_scores(emb, ids, metric, block=block)  # type: ignore[arg-type]
    want_g, want_i = _brute_pairs(emb, ids, metric)
    assert genuine.dtype == np.float64 and impostor.dtype == np.float32
    assert genuine.shape == want_g.shape and impostor.shape == want_i.shape
    np.testing.assert_allclose(genuine, want_g, rtol=1e-6, atol=1e-6)  # same row-major order
    np.testing.assert_allclose(impostor, want_i, rtol=1e-6, atol=1e-6)
    # genuine carries the float32 rounding too, so equal pairs stay ties across the sets
    np.testing.assert_array_equal(genuine, genuine.astype(np.float32).astype(np.float64))


def test_all_pairs_scores_identities_as_array_and_edge_sizes() -> None:
    emb = np.eye(4, dtype=np.float32)
    genuine, impostor = all_pairs_scores(emb, np.asarray([1, 1, 1, 1]), "cosine", block=3)
    assert genuine.tolist() == [0.0] * 6 and impostor.size == 0
    genuine, impostor = all_pairs_scores(emb, ["a", "b", "c", "d"], "l2", block=3)
    assert genuine.size == 0
    np.testing.assert_allclose(impostor, -math.sqrt(2), rtol=1e-6)
    genuine, impostor = all_pairs_scores(emb[:1], ["a"], "l2")
    assert genuine.size == 0 and impostor.size == 0
    genuine, impostor = all_pairs_scores(emb[:0], [], "cosine")
    assert genuine.size == 0 and impostor.size == 0
    # identical vectors: distance exactly 0 despite the |a|^2+|b|^2-2ab form (clipped)
    same = np.ones((2, 3), dtype=np.float32) * 0.1
    genuine, _ = all_pairs_scores(same, ["a", "a"], "l2")
    assert genuine.tolist() == [0.0]


@pytest.mark.parametrize(
    ("emb", "ids", "metric", "block"),
    [
        (np.zeros((2, 3), np.float32), ["a", "b"], "cosine", 4),  # zero vector
        (np.ones((2, 3), np.float32), ["a"], "l2", 4),  # id count
        (np.ones((2, 3), np.float32), ["a", "b"], "dot", 4),  # metric
        (np.ones((2, 3), np.float32), ["a", "b"], "l2", 0),  # block
        (np.ones(3, np.float32), ["a", "b", "c"], "l2", 4),  # not 2-d
        (np.full((2, 3), np.nan, np.float32), ["a", "b"], "l2", 4),
    ],
)
def test_all_pairs_scores_rejects(emb: NDArray[np.float32], ids: list[str], metric: Any, block: int) -> None:
    with pytest.raises(ValueError):
        all_pairs_scores(emb, ids, metric, block=block)
