"""Decisions first: a stream waits before its next frame while the in-process embedder runs a batch, and only
that long, and never longer than its bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from support import make_shot

from streamproc.messages import Message
from streamproc.metrics import PipelineMetrics
from streamproc.runtime.embed_service import EmbedService, QueueChannel
from streamproc.runtime.turns import EmbedTurns


def test_an_idle_embedder_costs_a_stream_nothing() -> None:
    start = time.perf_counter()
    assert EmbedTurns(1.0).wait_turn() == 0.0
    assert time.perf_counter() - start < 0.05


def test_a_stream_waits_until_the_batch_is_done() -> None:
    turns = EmbedTurns(5.0)
    started, release = threading.Event(), threading.Event()
    released_at: list[float] = []

    def embed() -> None:
        with turns.embedding():
            started.set()
            release.wait(5.0)
            released_at.append(time.perf_counter())

    thread = threading.Thread(target=embed)
    thread.start()
    assert started.wait(5.0)
    threading.Timer(0.2, release.set).start()
    waited = turns.wait_turn()
    returned_at = time.perf_counter()
    thread.join(5.0)
    assert 0.1 <= waited < 5.0
    assert released_at and returned_at >= released_at[0]
    assert turns.wait_turn() == 0.0  # the batch is over: no more waiting


def test_a_stuck_embedder_holds_a_stream_at_most_its_bound() -> None:
    turns = EmbedTurns(0.05)
    with turns.embedding():
        waited = turns.wait_turn()
    assert 0.04 <= waited < 1.0
    with turns.embedding():
        assert EmbedTurns(0.0).wait_turn() == 0.0  # 0: off


class SlowMatcher:
    """Stands in for the matcher: takes 0.3 s a batch, and says when a batch started."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def process(self, batch: Sequence[Message]) -> None:
        self.started.set()
        time.sleep(0.3)


def test_the_embed_service_takes_the_turn_for_each_batch() -> None:
    channel, matcher, turns = QueueChannel(16), SlowMatcher(), EmbedTurns(5.0)
    service = EmbedService(channel, matcher, 8, 0.0, PipelineMetrics(CollectorRegistry()), turns=turns)
    thread = threading.Thread(target=service.run, args=(threading.Event(),))
    thread.start()
    channel.send(make_shot(1), block=True)
    assert matcher.started.wait(5.0)
    waited = turns.wait_turn()
    channel.close()
    thread.join(10.0)
    assert 0.1 <= waited < 5.0
