"""The embed service loop: dynamic batching of best shots from every stream, then the matcher.

The matcher is :class:`~streamproc.runtime.matcher.Matcher`.

A batch closes when it holds ``max_batch`` chips or ``max_wait_s`` after its first message, whichever comes
first: under load batches fill up (GPU efficiency), when idle a lone shot waits at most ``max_wait_s``. With
``max_wait_s`` 0 (the default) a batch is what queued while the embedder was busy: on a CPU, where a larger batch
saves only ~20% a chip, a lone best shot then goes at once. (The 10 ms wait also let the streams start detecting
and take the cores from it: decisions were 20 ms faster at the median without it, bench/RESULTS.md, issue 13
run 20.)
The same loop runs on a thread of the single-process pipeline (inbox: :class:`QueueChannel`) and as the embed
service process (inbox: :class:`streamproc.runtime.transport.ZmqInbox`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Protocol

from streamproc.messages import BestShot, Message
from streamproc.metrics import PipelineMetrics
from streamproc.runtime.turns import EmbedTurns

log = logging.getLogger(__name__)

HOUSEKEEPING_EVERY_S = 0.5
STALL_S = 10.0
"""A loop that has not turned for this long is reported unhealthy (one batch takes well under a second)."""


class Inbox(Protocol):
    """Where the embed service takes messages from, in arrival order."""

    def get(self, timeout_s: float) -> Message | None:
        """The next message, or None when none arrived within ``timeout_s``."""
        ...

    def depth(self) -> int:
        """Messages waiting (as far as this side can tell)."""
        ...

    def finished(self, stopping: bool) -> bool:
        """True when no message will come any more (producers done and drained, or stopping and idle)."""
        ...


class BatchHandler(Protocol):
    """Takes one batch of messages, in arrival order (the :class:`~streamproc.runtime.matcher.Matcher`)."""

    def process(self, batch: Sequence[Message]) -> None: ...


class QueueChannel:
    """A bounded in-process queue: the fronts' :class:`~streamproc.stream.front.ShotSink` and the service's inbox."""

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue[Message] = queue.Queue(maxsize)
        self._closed = threading.Event()

    def send(self, message: Message, block: bool) -> bool:
        if not block:
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                return False
            return True
        self._queue.put(message)
        return True

    def get(self, timeout_s: float) -> Message | None:
        try:
            return self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """The producers are done: the service drains what is queued and ends."""
        self._closed.set()

    def finished(self, stopping: bool) -> bool:
        return self._closed.is_set() and self._queue.empty()


class EmbedService:
    """Batches messages from ``inbox`` and hands each batch to ``matcher``; see the module docstring."""

    def __init__(
        self,
        inbox: Inbox,
        matcher: BatchHandler,
        max_batch: int,
        max_wait_s: float,
        metrics: PipelineMetrics,
        housekeeping: Callable[[], None] | None = None,
        turns: EmbedTurns | None = None,
    ) -> None:
        """``turns``: in the single-process pipeline, each batch takes the embedder's turn on the shared cores
        (:mod:`streamproc.runtime.turns`)."""
        self._inbox = inbox
        self._matcher = matcher
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._metrics = metrics
        self._housekeeping = housekeeping
        self._turns = turns
        self._last_housekeeping = 0.0
        self._heartbeat: float | None = None  # monotonic time of the loop's latest turn; None before it starts
        self._finished = False

    def healthy(self) -> tuple[bool, dict[str, object]]:
        """Liveness: the loop has not turned for STALL_S only when something hangs (a stuck model call)."""
        if self._heartbeat is None or self._finished:
            return True, {"embed_loop": "finished" if self._finished else "starting"}
        age = time.monotonic() - self._heartbeat
        return age < STALL_S, {"embed_loop_age_s": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, object]]:
        """Readiness: the loop is taking shots."""
        ok = self._heartbeat is not None and not self._finished and time.monotonic() - self._heartbeat < STALL_S
        return ok, {"embed_loop": "running" if ok else "not running"}

    def run(self, stop: threading.Event) -> None:
        """Until the inbox is finished; after ``stop``, drain what is still arriving, then return."""
        while True:
            self._heartbeat = time.monotonic()
            self._tick()
            first = self._inbox.get(0.1)
            if first is None:
                if self._inbox.finished(stop.is_set()):
                    break
                continue
            batch = self._fill([first])
            self._metrics.embed_queue_depth.set(self._inbox.depth())
            with self._turns.embedding() if self._turns is not None else nullcontext():
                self._matcher.process(batch)
        self._tick(force=True)
        self._finished = True

    def _fill(self, batch: list[Message]) -> list[Message]:
        chips = sum(isinstance(m, BestShot) for m in batch)
        deadline = time.monotonic() + self._max_wait_s
        while chips < self._max_batch:
            remaining = deadline - time.monotonic()
            message = self._inbox.get(max(remaining, 0.0))
            if message is None:
                break
            batch.append(message)
            chips += isinstance(message, BestShot)
        return batch

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._housekeeping is not None and (force or now - self._last_housekeeping >= HOUSEKEEPING_EVERY_S):
            self._last_housekeeping = now
            self._housekeeping()
