"""FrameBuffer: order, both full-buffer policies, close/fail semantics, and a concurrent stress run."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from streamproc.stream.buffer import BufferClosed, BufferPolicy, FrameBuffer


@pytest.mark.parametrize("policy", ["wait", "drop_oldest"])
def test_items_come_out_in_order(policy: BufferPolicy) -> None:
    buf: FrameBuffer[int] = FrameBuffer(8, policy)
    for i in range(5):
        buf.put(i)
    assert buf.depth == 5
    assert [buf.get(0) for _ in range(5)] == list(range(5))
    assert buf.depth == 0 and buf.dropped == 0


@pytest.mark.parametrize(("capacity", "policy"), [(0, "wait"), (2, "newest")])
def test_invalid_settings_are_refused(capacity: int, policy: str) -> None:
    with pytest.raises(ValueError, match=r"capacity|policy"):
        FrameBuffer(capacity, policy)  # type: ignore[arg-type]


def test_wait_policy_blocks_the_producer_until_the_consumer_takes() -> None:
    buf: FrameBuffer[int] = FrameBuffer(2, "wait")
    buf.put(0)
    buf.put(1)
    done = threading.Event()

    def produce() -> None:
        buf.put(2)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    assert not done.wait(0.2), "put must block while the buffer is full"
    assert buf.depth == 2
    assert buf.get(1) == 0
    assert done.wait(5), "put must resume once there is room"
    t.join(5)
    assert [buf.get(0), buf.get(0)] == [1, 2]
    assert buf.dropped == 0


def test_drop_oldest_keeps_the_newest_items_and_counts_every_drop() -> None:
    drops: list[int] = []
    buf: FrameBuffer[int] = FrameBuffer(3, "drop_oldest", on_drop=drops.append)
    start = time.monotonic()
    for i in range(10):
        buf.put(i)  # never blocks
    assert time.monotonic() - start < 1.0
    assert buf.dropped == 7 and sum(drops) == 7 and set(drops) == {1}
    assert [buf.get(0) for _ in range(3)] == [7, 8, 9]


def test_get_times_out_with_timeout_error() -> None:
    buf: FrameBuffer[int] = FrameBuffer(1, "wait")
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        buf.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - start < 2.0
    with pytest.raises(TimeoutError):
        buf.get(timeout=0)


def test_close_lets_consumers_drain_then_raises_buffer_closed() -> None:
    buf: FrameBuffer[str] = FrameBuffer(4, "wait")
    buf.put("a")
    buf.put("b")
    buf.close()
    assert buf.closed
    assert list(buf) == ["a", "b"]
    with pytest.raises(BufferClosed):
        buf.get(timeout=1)
    with pytest.raises(BufferClosed):
        buf.put("c")


def test_close_wakes_a_blocked_consumer() -> None:
    buf: FrameBuffer[int] = FrameBuffer(1, "wait")
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            buf.get()
        except BufferClosed as err:
            outcome.append(err)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    buf.close()
    t.join(5)
    assert not t.is_alive() and len(outcome) == 1


def test_close_releases_a_producer_blocked_on_a_full_buffer_promptly() -> None:
    buf: FrameBuffer[int] = FrameBuffer(1, "wait")
    buf.put(0)
    outcome: list[BaseException] = []

    def produce() -> None:
        try:
            buf.put(1)
        except BufferClosed as err:
            outcome.append(err)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.05)
    start = time.monotonic()
    buf.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - start < 1.0
    assert len(outcome) == 1
    assert buf.get(0) == 0  # what was queued before close is still delivered


def test_fail_reraises_the_producer_error_after_the_queued_items() -> None:
    buf: FrameBuffer[int] = FrameBuffer(4, "wait")
    buf.put(1)
    boom = RuntimeError("decoder exploded")
    buf.fail(boom)
    buf.close()  # a later close does not hide the error
    assert buf.get(0) == 1
    with pytest.raises(RuntimeError, match="decoder exploded") as info:
        buf.get(0)
    assert info.value is boom
    with pytest.raises(RuntimeError, match="decoder exploded"):
        list(buf)


def test_fail_wakes_a_blocked_consumer_with_the_error() -> None:
    buf: FrameBuffer[int] = FrameBuffer(1, "drop_oldest")
    caught: list[BaseException] = []

    def consume() -> None:
        try:
            buf.get(timeout=5)
        except ValueError as err:
            caught.append(err)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    buf.fail(ValueError("bad stream"))
    t.join(5)
    assert [str(e) for e in caught] == ["bad stream"]


@pytest.mark.parametrize("policy", ["wait", "drop_oldest"])
def test_concurrent_producer_and_consumers_lose_nothing_unaccounted(policy: BufferPolicy) -> None:
    n = 5_000
    buf: FrameBuffer[int] = FrameBuffer(16, policy)
    received: list[list[int]] = [[], []]

    def produce() -> None:
        for i in range(n):
            buf.put(i)
        buf.close()

    def consume(out: list[int]) -> None:
        out.extend(buf)

    threads = [threading.Thread(target=produce)] + [threading.Thread(target=consume, args=(r,)) for r in received]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "stress run hung"
    assert time.monotonic() - start < 30
    got = received[0] + received[1]
    assert len(got) == len(set(got))  # nothing delivered twice
    assert all(a < b for r in received for a, b in itertools.pairwise(r))  # each consumer sees FIFO order
    if policy == "wait":
        assert sorted(got) == list(range(n)) and buf.dropped == 0
    else:
        assert len(got) + buf.dropped == n
        assert n - 1 in got  # the newest item is never the one dropped
