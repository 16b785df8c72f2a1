"""Clopper-Pearson intervals: published values, closed forms, and exact binomial tail sums."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.eval.intervals import clopper_pearson


@pytest.mark.parametrize(
    ("k", "n", "lower", "upper"),
    [
        (0, 10, 0.0, 0.3085),
        (5, 10, 0.1871, 0.8129),
        (10, 10, 0.6915, 1.0),
        (1, 10, 0.0025, 0.4450),
        (9, 10, 0.5550, 0.9975),
        (50, 100, 0.3983, 0.6017),
        (0, 3000, 0.0, 0.0012),
        (0, 0, 0.0, 1.0),
    ],
)
def test_clopper_pearson_known_values(k: int, n: int, lower: float, upper: float) -> None:
    lo, hi = clopper_pearson(k, n)
    assert (round(lo, 4), round(hi, 4)) == (lower, upper)


def test_clopper_pearson_closed_forms_and_confidence() -> None:
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025**0.1, rel=1e-14)
    assert clopper_pearson(0, 10, 0.9)[1] == pytest.approx(1 - 0.05**0.1, rel=1e-14)
    wide, narrow = clopper_pearson(30, 100, 0.99), clopper_pearson(30, 100, 0.8)
    assert wide[0] < narrow[0] < 0.3 < narrow[1] < wide[1]


def _binom_tail_ge(k: int, n: int, p: float) -> float:
    return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@settings(max_examples=60)
@given(st.integers(1, 150).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_clopper_pearson_solves_the_binomial_tails(kn: tuple[int, int]) -> None:
    """Independent check: P(X >= k | lower) = P(X <= k | upper) = 2.5% by exact sums."""
    k, n = kn
    lo, hi = clopper_pearson(k, n)
    assert 0.0 <= lo < hi <= 1.0
    if k > 0:
        assert _binom_tail_ge(k, n, lo) == pytest.approx(0.025, rel=1e-7)
    if k < n:
        assert 1.0 - _binom_tail_ge(k + 1, n, hi) == pytest.approx(0.025, rel=1e-7)
    mirror = clopper_pearson(n - k, n)
    assert (lo, hi) == pytest.approx((1 - mirror[1], 1 - mirror[0]), abs=1e-12)


def test_clopper_pearson_large_n() -> None:
    # 840 false matches in 84M impostor pairs (FMR 1e-5 on all LFW pairs): fast and sane.
    lo, hi = clopper_pearson(840, 84_000_000)
    assert 0.93e-5 < lo < 1e-5 < hi < 1.07e-5
    lo, hi = clopper_pearson(3, 3000)
    assert (round(lo, 6), round(hi, 6)) == (0.000206, 0.00292)  # Poisson-like: (0.619, 8.77)/3000


@pytest.mark.parametrize(("k", "n", "confidence"), [(-1, 5, 0.95), (6, 5, 0.95), (1, 5, 0.0), (1, 5, 1.0)])
def test_clopper_pearson_rejects(k: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        clopper_pearson(k, n, confidence)
