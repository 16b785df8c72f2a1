"""Dynamic batching in the embed service: full batches under load, a bounded wait when idle, order kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from support import make_shot

from streamproc.messages import BestShot, Message, StreamOpened, TrackEnded
from streamproc.metrics import PipelineMetrics
from streamproc.runtime.embed_service import EmbedService, QueueChannel


class Recorder:
    """Stands in for the matcher: records each batch it is handed, and when."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.times: list[float] = []

    def process(self, batch: Sequence[Message]) -> None:
        self.batches.append(list(batch))
        self.times.append(time.monotonic())


def serve(channel: QueueChannel, recorder: Recorder, max_batch: int, max_wait_s: float) -> threading.Thread:
    service = EmbedService(channel, recorder, max_batch, max_wait_s, PipelineMetrics(CollectorRegistry()))
    thread = threading.Thread(target=service.run, args=(threading.Event(),))
    thread.start()
    return thread


def test_a_backlog_is_cut_into_full_batches_in_order() -> None:
    channel, recorder = QueueChannel(1024), Recorder()
    messages: list[Message] = [StreamOpened("s", "")]
    messages += [make_shot(i) for i in range(70)]
    messages.append(TrackEnded("s", "", 69))
    for m in messages:
        assert channel.send(m, block=True)
    channel.close()
    serve(channel, recorder, max_batch=32, max_wait_s=0.05).join(timeout=10)
    chips = [sum(isinstance(m, BestShot) for m in b) for b in recorder.batches]
    assert chips == [32, 32, 6]
    assert [m for b in recorder.batches for m in b] == messages  # nothing lost, nothing reordered


def test_a_lone_shot_waits_at_most_max_wait() -> None:
    channel, recorder = QueueChannel(16), Recorder()
    thread = serve(channel, recorder, max_batch=32, max_wait_s=0.05)
    sent = time.monotonic()
    channel.send(make_shot(1), block=True)
    deadline = time.monotonic() + 5
    while not recorder.batches and time.monotonic() < deadline:
        time.sleep(0.005)
    channel.close()
    thread.join(timeout=10)
    assert len(recorder.batches) == 1 and len(recorder.batches[0]) == 1
    assert 0.04 <= recorder.times[0] - sent < 1.0


def test_a_full_channel_refuses_non_blocking_sends() -> None:
    channel = QueueChannel(2)
    assert channel.send(make_shot(1), block=False) and channel.send(make_shot(2), block=False)
    assert not channel.send(make_shot(3), block=False)
    assert channel.depth() == 2


def test_probes_follow_the_loop() -> None:
    channel, recorder = QueueChannel(16), Recorder()
    service = EmbedService(channel, recorder, 8, 0.01, PipelineMetrics(CollectorRegistry()))
    assert service.healthy()[0] and not service.ready()[0]  # starting: alive, not ready
    thread = threading.Thread(target=service.run, args=(threading.Event(),))
    thread.start()
    deadline = time.monotonic() + 5
    while not service.ready()[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.ready()[0] and service.healthy()[0]
    channel.close()
    thread.join(timeout=10)
    assert not service.ready()[0] and service.healthy()[1] == {"embed_loop": "finished"}
