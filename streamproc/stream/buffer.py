"""The bounded hand-off between a decode thread (producer) and a processing loop (consumer).

Two policies for when the consumer falls behind:

- ``wait``: :meth:`FrameBuffer.put` blocks until there is room. Back-pressure slows decoding to the speed of
  processing, so a file loses no frame.
- ``drop_oldest``: :meth:`FrameBuffer.put` never blocks; when full it evicts the oldest queued item and counts
  it, so a live stream stays current instead of drifting ever further behind the camera.

End of stream is explicit: the producer calls :meth:`~FrameBuffer.close` (done) or :meth:`~FrameBuffer.fail`
(crashed); the consumer drains what is queued, then :meth:`~FrameBuffer.get` raises :class:`BufferClosed` or
the producer's exception. All waiting is on :class:`threading.Condition`; nothing polls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

BufferPolicy = Literal["wait", "drop_oldest"]


class BufferClosed(Exception):  # noqa: N818 - an end-of-stream signal, named like queue.Empty
    """``get`` on a closed buffer that has been drained, or ``put`` on a closed buffer."""


class FrameBuffer(Generic[T]):
    """A bounded FIFO between one producer and one or more consumers; thread-safe.

    ``on_drop(n)`` is called (from the producer's thread, outside the lock) for every eviction under
    ``drop_oldest``, so a metric can count lost frames; :attr:`dropped` holds the running total.
    """

    def __init__(self, capacity: int, policy: BufferPolicy, on_drop: Callable[[int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        if policy not in ("wait", "drop_oldest"):
            raise ValueError(f"buffer policy must be 'wait' or 'drop_oldest', got {policy!r}")
        self._capacity = capacity
        self._policy: BufferPolicy = policy
        self._on_drop = on_drop
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False
        self._error: BaseException | None = None
        self._dropped = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def policy(self) -> BufferPolicy:
        return self._policy

    @property
    def depth(self) -> int:
        """Items queued now (for a queue-depth gauge)."""
        with self._lock:
            return len(self._items)

    @property
    def dropped(self) -> int:
        """Items evicted so far under ``drop_oldest`` (always 0 under ``wait``)."""
        with self._lock:
            return self._dropped

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    def put(self, item: T) -> None:
        """Queue one item, applying the policy when full.

        Raises :class:`BufferClosed` if the buffer is closed, including when it is closed while this call
        waits for room (so ``close`` from another thread unblocks a waiting producer at once).
        """
        evicted = False
        with self._lock:
            if self._policy == "wait":
                while len(self._items) >= self._capacity and not self._closed:
                    self._not_full.wait()
            if self._closed:
                raise BufferClosed("put on a closed buffer")
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self._dropped += 1
                evicted = True
            self._items.append(item)
            self._not_empty.notify()
        if evicted and self._on_drop is not None:
            self._on_drop(1)

    def get(self, timeout: float | None = None) -> T:
        """Take the oldest item, waiting up to ``timeout`` seconds (``None``: no limit).

        Raises :class:`TimeoutError` when nothing arrived in time; once the buffer is closed and drained,
        raises the error given to :meth:`fail`, else :class:`BufferClosed`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._items:
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    raise BufferClosed("buffer closed and drained")
                if deadline is None:
                    self._not_empty.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no item within {timeout} s")
                    self._not_empty.wait(remaining)
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def close(self) -> None:
        """The producer is done: consumers drain the rest, then ``get`` raises :class:`BufferClosed`."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def fail(self, error: BaseException) -> None:
        """The producer crashed: consumers drain the rest, then ``get`` re-raises ``error``.

        The first error wins; a later ``fail`` or ``close`` does not replace it.
        """
        with self._lock:
            if self._error is None:
                self._error = error
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def __iter__(self) -> Iterator[T]:
        """Yield items until the buffer is closed and drained (re-raising a producer's error)."""
        while True:
            try:
                yield self.get()
            except BufferClosed:
                return
