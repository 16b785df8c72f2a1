"""Decisions first: in the single-process pipeline, a stream waits to detect while the embedder runs a batch.

On a CPU the embed thread and the streams' detector calls share the same cores, so a best shot's embedding (the
step an operator's alert waits on) runs at about half speed whenever a stream detects at the same time. A
stream can afford to wait instead: it has a decoded-frame buffer and, where it keeps up, spare time between
frames. So while the embedder works on a batch, a stream about to start its next frame waits for it, at most
``max_wait_s`` (a stuck model call never stalls the streams). On the live 1080p Hamilton clip on two cores,
with the shots sent before their closing frame is detected and no batch-filling wait, decisions took p50 48 ms
and at most 91 ms in six 60 s runs, against p50 80 and up to 168 ms before, for ~1% of the stream's time and no
frame dropped (bench/RESULTS.md, issue 13 run 20). Stream workers in their own processes (``scale.workers`` > 0)
do not use it: there the embed service is a process of its own, on its own host or GPU where it is deployed for
load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class EmbedTurns:
    """The embedder's turn on shared cores: :meth:`embedding` marks a batch in progress (one embed thread), and
    :meth:`wait_turn` is where a stream steps aside for it."""

    def __init__(self, max_wait_s: float) -> None:
        self._max_wait_s = max_wait_s
        self._idle = threading.Event()
        self._idle.set()

    @contextmanager
    def embedding(self) -> Iterator[None]:
        """Around one batch's embedding and search."""
        self._idle.clear()
        try:
            yield
        finally:
            self._idle.set()

    def wait_turn(self) -> float:
        """Wait while a batch is in progress (at most ``max_wait_s``); returns the seconds waited."""
        if self._idle.is_set() or self._max_wait_s <= 0:
            return 0.0
        start = time.perf_counter()
        self._idle.wait(self._max_wait_s)
        return time.perf_counter() - start
