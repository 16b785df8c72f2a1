"""Hand-checked tables for the open-set (rank-1) rates in streamproc.eval.openset_metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from streamproc.eval.openset_metrics import (
    OpenSetResult,
    fnir_at_fpir,
    open_set_at_threshold,
    open_set_identification,
    rank1_split,
)


def up(x: float) -> float:
    """The smallest float64 above x."""
    return float(np.nextafter(x, math.inf))


def f64(values: list[float]) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


# Mated probes: right and strong, right but weak, wrong subject at 0.8, no candidate at all.
CORRECT = np.asarray([True, True, False, False])
MATED = f64([0.9, 0.4, 0.8, -math.inf])
NONMATED = f64([0.7, 0.3, 0.5, 0.2])


@pytest.mark.parametrize(
    ("threshold", "fpir", "fnir", "false_candidates"),
    [
        (0.6, 0.25, 0.75, 2),  # nonmated 0.7 + wrong 0.8
        (0.85, 0.0, 0.75, 0),
        (0.95, 0.0, 1.0, 0),
        (0.35, 0.5, 0.5, 3),
        (-math.inf, 1.0, 0.5, 5),  # "no candidate" never counts, even at -inf
    ],
)
def test_open_set_at_threshold_table(threshold: float, fpir: float, fnir: float, false_candidates: int) -> None:
    result = open_set_at_threshold(CORRECT, MATED, NONMATED, threshold)
    assert result == OpenSetResult(threshold, fpir, fnir, 4, 4, false_candidates)


@pytest.mark.parametrize(
    ("fpir", "threshold", "fnir", "false_candidates"),
    [
        (0.0, up(0.7), 0.75, 1),  # allowed 0: above 0.7; wrong 0.8 still shown
        (0.25, up(0.5), 0.75, 2),  # allowed 1
        (0.5, up(0.3), 0.5, 3),  # allowed 2
        (1.0, -math.inf, 0.5, 5),
    ],
)
def test_fnir_at_fpir_table(fpir: float, threshold: float, fnir: float, false_candidates: int) -> None:
    result = fnir_at_fpir(CORRECT, MATED, NONMATED, fpir)
    assert result.threshold == threshold
    assert result.fpir <= fpir
    assert (result.fnir, result.false_candidates) == (fnir, false_candidates)
    assert open_set_identification(CORRECT, MATED, NONMATED, fpir=fpir) == result
    assert open_set_identification(CORRECT, MATED, NONMATED, threshold=threshold) == result


def test_open_set_rejects() -> None:
    with pytest.raises(ValueError):
        open_set_identification(CORRECT, MATED, NONMATED)
    with pytest.raises(ValueError):
        open_set_identification(CORRECT, MATED, NONMATED, fpir=0.1, threshold=0.5)
    with pytest.raises(ValueError):
        open_set_at_threshold(CORRECT[:2], MATED, NONMATED, 0.5)
    with pytest.raises(ValueError):
        open_set_at_threshold(CORRECT, MATED, f64([]), 0.5)
    with pytest.raises(ValueError):
        open_set_at_threshold(CORRECT, MATED, NONMATED, math.nan)


def test_rank1_split() -> None:
    scores = f64([0.9, 0.1, 0.5, 0.6, 0.7, 0.2]).reshape(3, 2)
    correct, mated, nonmated = rank1_split(scores, ["a", "b"], ["a", "c", "b"])
    assert correct.tolist() == [True, False]  # probe "b" ranks "a" first
    assert mated.tolist() == [0.9, 0.7]
    assert nonmated.tolist() == [0.6]
    correct, mated, nonmated = rank1_split(np.empty((2, 0)), [], ["a", "b"])
    assert correct.size == 0 and mated.size == 0 and nonmated.tolist() == [-math.inf, -math.inf]
    with pytest.raises(ValueError):
        rank1_split(np.empty((2, 3)), ["a"], ["a", "b"])
