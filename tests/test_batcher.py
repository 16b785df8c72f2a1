"""Micro-batcher: size cap, wait cap, order, errors, draining on close."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from streamproc.batcher import BatchPolicy, MicroBatcher


def test_batches_respect_max_batch_and_keep_order() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def double(items: Sequence[int]) -> list[int]:
        gate.wait(5)
        return [2 * i for i in items]

    with MicroBatcher(double, BatchPolicy(max_batch=4, max_wait_s=0.05), on_batch=sizes.append) as b:
        futures = [b.submit(i) for i in range(10)]
        gate.set()
        assert [f.result(5) for f in futures] == [2 * i for i in range(10)]
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_lone_item_is_not_held_longer_than_max_wait() -> None:
    b: MicroBatcher[str, str]
    with MicroBatcher[str, str](list, BatchPolicy(max_batch=64, max_wait_s=0.02)) as b:
        start = time.monotonic()
        assert b.submit("x").result(5) == "x"
        assert time.monotonic() - start < 1.0  # generous: the wait is 20 ms; this only guards against hanging


def test_errors_reach_every_caller_of_the_batch() -> None:
    def fail(items: Sequence[int]) -> list[int]:
        raise ValueError("model exploded")

    with MicroBatcher(fail, BatchPolicy(max_batch=8, max_wait_s=0.05)) as b:
        futures = [b.submit(i) for i in range(3)]
        for f in futures:
            with pytest.raises(ValueError, match="exploded"):
                f.result(5)


def test_close_drains_queued_items_and_refuses_new_ones() -> None:
    b: MicroBatcher[int, int] = MicroBatcher(lambda items: [i + 1 for i in items], BatchPolicy(max_batch=2))
    futures = [b.submit(i) for i in range(7)]
    b.close()
    assert [f.result(0) for f in futures] == list(range(1, 8))
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(1)


def test_wrong_result_count_is_an_error() -> None:
    b: MicroBatcher[int, int]
    with (
        MicroBatcher[int, int](lambda items: [], BatchPolicy(max_batch=2)) as b,
        pytest.raises(RuntimeError, match="0 results"),
    ):
        b.submit(1).result(5)
