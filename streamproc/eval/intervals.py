"""Binomial confidence intervals for measured error rates (pure Python maths, no SciPy).

An error rate measured as ``k`` errors in ``n`` trials is reported with the exact (Clopper-Pearson)
interval, so "0 false matches in 3,000" reads as "FMR below 1e-3 at 95%", not as "FMR = 0".
"""

from __future__ import annotations

import math

import numpy as np


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided binomial interval for ``k`` successes in ``n``.

    Chosen over Wilson because it never undercovers and stays meaningful at ``k = 0``, the
    usual case for false matches at strict thresholds. ``k = 0`` gives lower 0 and
    ``k = n`` upper 1 (closed forms); ``n = 0`` gives the uninformative ``(0.0, 1.0)``.
    Otherwise the bounds are beta quantiles ``B(a/2; k, n-k+1)`` and ``B(1-a/2; k+1, n-k)``,
    found by bisection on the regularised incomplete beta function (continued fraction).
    """
    if not (isinstance(k, int | np.integer) and isinstance(n, int | np.integer)):
        raise ValueError("k and n must be integers")
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    k, n = int(k), int(n)
    tail = (1.0 - confidence) / 2.0
    lower = 0.0 if k == 0 else (tail ** (1.0 / n) if k == n else _beta_quantile(tail, k, n - k + 1))
    upper = 1.0 if k == n else (1.0 - tail ** (1.0 / n) if k == 0 else _beta_quantile(1.0 - tail, k + 1, n - k))
    return lower, upper


def _beta_quantile(p: float, a: float, b: float) -> float:
    """x with I_x(a, b) = p, by bisection (I is increasing in x; robust, ~60-200 steps)."""
    lo, hi = 0.0, 1.0
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi) or hi - lo <= 1e-15 * hi:
            break
        if _regularized_beta(mid, a, b) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes ``betai``)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(x, a, b) / a
    return 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction for I_x(a, b) by the modified Lentz method (NR ``betacf``)."""
    tiny, eps = 1e-300, 1e-15

    def guard(v: float) -> float:
        return v if abs(v) > tiny else tiny

    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 / guard(1.0 - qab * x / qap)
    h = d
    # Converges in O(sqrt(max(a, b))) terms in the worst case; allow ample headroom.
    for m in range(1, 10_000 + int(10 * math.sqrt(max(a, b)))):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 / guard(1.0 + even * d)
        c = guard(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 / guard(1.0 + odd * d)
        c = guard(1.0 + odd / c)
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")
