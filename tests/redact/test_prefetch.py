"""The redaction passes' background stage: order, errors and early stops reach the consumer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from streamproc.errors import SourceError
from streamproc.redact.prefetch import prefetch


def test_items_arrive_in_order_through_a_small_queue() -> None:
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))


def test_an_error_in_the_worker_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise SourceError("clip.mp4: damaged video at frame 2")

    got: list[int] = []
    with pytest.raises(SourceError, match="frame 2"):
        for item in prefetch(items(), depth=8):
            got.append(item)
    assert got == [1, 2]


def test_stopping_early_closes_the_source_and_ends_the_worker() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(10**9)
        finally:
            closed.set()

    before = threading.active_count()
    with contextlib.closing(prefetch(items(), depth=2)) as stream:
        for item in stream:
            if item == 5:
                break
    assert closed.is_set()
    assert threading.active_count() == before
