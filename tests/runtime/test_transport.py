"""The chip channel over real ZeroMQ sockets: order kept, full queues refuse live sends, CURVE admits only
workers whose key the embed service holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from support import make_shot

from streamproc.config import ChipCurveConfig, ScaleConfig
from streamproc.errors import ConfigError
from streamproc.feed.security import Authenticator, generate_keypair
from streamproc.messages import BestShot, Message, StreamOpened, TrackEnded
from streamproc.runtime.transport import ZmqInbox, ZmqShotSink, chip_client_security, chip_server_security


@pytest.fixture
def context() -> Iterator[zmq.SyncContext]:
    ctx: zmq.SyncContext = zmq.Context()
    yield ctx
    ctx.term()


def receive(inbox: ZmqInbox, n: int, timeout_s: float = 5.0) -> list[Message]:
    got: list[Message] = []
    while len(got) < n:
        message = inbox.get(timeout_s)
        if message is None:
            break
        got.append(message)
    return got


def test_one_streams_messages_arrive_in_order(context: zmq.SyncContext) -> None:
    inbox = ZmqInbox(context, "tcp://127.0.0.1:*", hwm=64)
    sink = ZmqShotSink(context, inbox.endpoint, hwm=64, stop=threading.Event())
    sent: list[Message] = [StreamOpened("s", ""), *[make_shot(i) for i in range(20)], TrackEnded("s", "", 19)]
    try:
        assert all(sink.send(m, block=True) for m in sent)
        got = receive(inbox, len(sent))
    finally:
        sink.close()
        inbox.close()
    assert [type(m) for m in got] == [type(m) for m in sent]
    assert [m.track_id for m in got if isinstance(m, BestShot)] == list(range(20))


def test_a_live_stream_drops_when_the_service_is_away(context: zmq.SyncContext) -> None:
    # No embed service bound: the socket queues up to its high-water mark, then refuses live sends at once.
    sink = ZmqShotSink(context, "tcp://127.0.0.1:1", hwm=4, stop=threading.Event())
    try:
        results = [sink.send(make_shot(i), block=False) for i in range(50)]
    finally:
        sink.close(linger_ms=0)  # nothing to deliver to
    assert results.count(True) <= 16 and results.count(False) >= 34


def keys(tmp_path: Path) -> tuple[ScaleConfig, ScaleConfig]:
    server_secret = generate_keypair(tmp_path / "server", "embed")[1]
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    worker_public, worker_secret = generate_keypair(tmp_path / "worker", "worker-a")
    (allowed / worker_public.name).write_bytes(worker_public.read_bytes())
    stranger_secret = generate_keypair(tmp_path / "stranger", "stranger")[1]
    server_public = tmp_path / "server" / "embed.key"
    good = ScaleConfig(
        curve=ChipCurveConfig(
            server_secret_key=server_secret,
            allowed_clients_dir=allowed,
            client_secret_key=worker_secret,
            server_public_key=server_public,
        )
    )
    bad = ScaleConfig(curve=ChipCurveConfig(client_secret_key=stranger_secret, server_public_key=server_public))
    return good, bad


def test_curve_admits_allowed_workers_only(context: zmq.SyncContext, tmp_path: Path) -> None:
    good, bad = keys(tmp_path)
    server = chip_server_security(good)
    assert server is not None
    with Authenticator(context, server.allowed_clients_dir):
        inbox = ZmqInbox(context, "tcp://127.0.0.1:*", hwm=64, security=server)
        allowed = ZmqShotSink(context, inbox.endpoint, 64, threading.Event(), chip_client_security(good))
        stranger = ZmqShotSink(context, inbox.endpoint, 64, threading.Event(), chip_client_security(bad))
        try:
            stranger.send(make_shot(99), block=False)
            allowed.send(make_shot(1), block=True)
            got = receive(inbox, 2, timeout_s=2.0)
        finally:
            for sink in (allowed, stranger):
                sink.close(linger_ms=0)
            inbox.close()
    assert [m.track_id for m in got if isinstance(m, BestShot)] == [1]


def test_half_configured_curve_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="embed service needs"):
        chip_server_security(ScaleConfig(curve=ChipCurveConfig(client_secret_key=tmp_path / "x")))
    with pytest.raises(ConfigError, match="workers need"):
        chip_client_security(ScaleConfig(curve=ChipCurveConfig(server_secret_key=tmp_path / "x")))
