"""Fair score map: equalises false-match rates of synthetic groups it never sees labels of; stable on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamproc.search.fairscore import FairScoreMap, fit_fair_map, spherical_kmeans


def _faces(rng: np.random.Generator, n: int, spreads: tuple[float, float], dim: int = 16) -> np.ndarray:
    """Two groups of unit vectors around two directions: group 0 tight (look-alike), group 1 spread."""
    centre = np.zeros((2, dim), np.float32)
    centre[0, 0] = centre[1, 1] = 1.0
    out = []
    for g, spread in enumerate(spreads):
        x = centre[g] + spread * rng.standard_normal((n, dim)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return np.concatenate(out)


def _within_group_fmr(sims: np.ndarray, threshold: float) -> float:
    i, j = np.triu_indices(sims.shape[0], 1)
    return float(np.mean(sims[i, j] >= threshold))


def test_fair_map_equalises_group_false_match_rates_without_labels() -> None:
    rng = np.random.default_rng(7)
    n = 300
    fit = _faces(rng, n, (0.35, 0.7))
    test = _faces(rng, n, (0.35, 0.7))
    # Reference impostors: all pairs of the fitting faces (what a threshold table is set on); FMR 1e-2.
    s = fit @ fit.T
    i, j = np.triu_indices(2 * n, 1)
    ref = s[i, j]
    t = float(np.sort(ref)[::-1][int(1e-2 * ref.size)])
    fm = fit_fair_map(fit, [f"f{k}" for k in range(2 * n)], "cosine", ref, n_clusters=4, lookalike=0.25)
    raw, fair = [], []
    for g in (0, 1):
        z = test[g * n : (g + 1) * n]
        sims = z @ z.T
        raw.append(_within_group_fmr(sims, t))
        a, b = np.triu_indices(n, 1)
        cl = fm.assign(z)
        cal = fm.calibrate(cl[a], cl[b], 1.0 - sims[a, b])
        fair.append(float(np.mean(cal <= 1.0 - t)))
    assert raw[0] / raw[1] > 5  # the tight group is falsely matched far more often
    assert 1 / 4 < fair[0] / fair[1] < 4
    assert max(fair) < max(raw) / 4


def test_map_is_monotone_symmetric_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    x = _faces(rng, 120, (0.4, 0.6))
    s = x @ x.T
    i, j = np.triu_indices(x.shape[0], 1)
    fm = fit_fair_map(x, [str(k) for k in range(x.shape[0])], "cosine", s[i, j], n_clusters=3, lookalike=0.1)
    d = np.linspace(0.0, 2.0, 41)
    left, right = np.zeros((41, fm.n_members), np.int64), np.full((41, fm.n_members), 2, np.int64)
    cal = fm.calibrate(left, right, d)
    assert np.all(np.diff(cal) >= 0)
    np.testing.assert_allclose(cal, fm.calibrate(right, left, d))
    assert fm.calibrate(left[:0], right[:0], d[:0]).shape == (0,)
    again = FairScoreMap.from_dict(json.loads(json.dumps(fm.to_dict())))
    np.testing.assert_allclose(again.calibrate(left, right, d), cal, atol=1e-5)
    np.testing.assert_array_equal(again.assign(x), fm.assign(x))


def test_l2_metric_uses_negative_distance_as_similarity() -> None:
    rng = np.random.default_rng(3)
    x = _faces(rng, 100, (0.4, 0.6)) * 2.0
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    i, j = np.triu_indices(x.shape[0], 1)
    fm = fit_fair_map(x, [str(k) for k in range(x.shape[0])], "l2", -d[i, j], n_clusters=2, lookalike=0.1)
    cl = fm.assign(x)
    cal = fm.calibrate(cl[i], cl[j], d[i, j])
    assert cal.shape == d[i, j].shape and np.all(np.isfinite(cal)) and np.all(cal >= 0)


def test_kmeans_is_deterministic_and_separates_blobs() -> None:
    rng = np.random.default_rng(0)
    x = _faces(rng, 50, (0.1, 0.1))
    c1, l1 = spherical_kmeans(x, 2, seed=5)
    c2, l2 = spherical_kmeans(x, 2, seed=5)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(c1, c2)
    assert len(set(l1[:50])) == 1 and len(set(l1[50:])) == 1 and l1[0] != l1[50]


def test_bad_inputs_and_files_are_refused() -> None:
    rng = np.random.default_rng(0)
    x = _faces(rng, 20, (0.3, 0.3))
    with pytest.raises(ValueError, match="too few"):
        fit_fair_map(x, [str(k) for k in range(40)], "cosine", np.array([0.1, 0.2]), n_clusters=10)
    with pytest.raises(ValueError, match="lookalike"):
        fit_fair_map(x, [str(k) for k in range(40)], "cosine", np.array([0.1, 0.2]), n_clusters=2, lookalike=0)
    fm = fit_fair_map(x, [str(k) for k in range(40)], "cosine", np.array([0.1, 0.2, 0.3]), n_clusters=2)
    raw = fm.to_dict()
    with pytest.raises(ValueError, match="format"):
        FairScoreMap.from_dict({**raw, "format": "other"})
    with pytest.raises(ValueError, match="one curve per pair"):
        FairScoreMap.from_dict({**raw, "pair_similarity": raw["pair_similarity"][:1]})
    with pytest.raises(ValueError, match="rise"):
        FairScoreMap.from_dict({**raw, "reference_similarity": raw["reference_similarity"][::-1]})
    with pytest.raises(ValueError, match="shape"):
        fm.assign(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="as assign"):
        fm.calibrate(np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(3))


def test_a_person_with_many_photos_weighs_as_much_as_the_cap() -> None:
    rng = np.random.default_rng(4)
    x = _faces(rng, 80, (0.4, 0.6))
    many = x[0] + 0.05 * rng.standard_normal((60, x.shape[1])).astype(np.float32)  # one person, 60 photos
    fit = np.concatenate([x, many / np.linalg.norm(many, axis=1, keepdims=True)])
    persons = [f"f{k}" for k in range(x.shape[0])] + ["busy"] * 60
    s = x @ x.T
    i, j = np.triu_indices(x.shape[0], 1)
    ref = s[i, j]

    def fit_on(v: np.ndarray, who: list[str], cap: int | None = None) -> FairScoreMap:
        return fit_fair_map(v, who, "cosine", ref, n_clusters=3, lookalike=0.1, members=2, max_per_person=cap)

    capped, by_hand, uncapped = fit_on(fit, persons, 2), fit_on(fit[:162], persons[:162]), fit_on(fit, persons)
    np.testing.assert_array_equal(capped.centroids, by_hand.centroids)
    np.testing.assert_array_equal(capped.lookalike_levels, by_hand.lookalike_levels)
    assert not np.array_equal(capped.pair_similarity, uncapped.pair_similarity)
    with pytest.raises(ValueError, match="max_per_person"):
        fit_on(fit, persons, 0)
