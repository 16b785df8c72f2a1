"""CURVE on the event feed: keys, the ZAP authenticator, real sockets, and `keys generate`.

Sockets bind to tcp://127.0.0.1:* (a free port chosen by the OS). "Receives nothing" is shown against a positive
control: the publisher keeps publishing until an allowed subscriber has received many events over a generous
time, and a socket monitor shows that the refused client's handshake actually failed. No fixed sleeps.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from typer.testing import CliRunner
from zmq.utils.monitor import recv_monitor_message

from streamproc.cli.keys import keys_app
from streamproc.errors import StreamprocError
from streamproc.feed.publish import EventPublisher
from streamproc.feed.schema import CalibrationInfo, MatchEvent, QualityInfo, make_event_id
from streamproc.feed.security import (
    Authenticator,
    ClientSecurity,
    SecurityError,
    ServerSecurity,
    client_security_from_options,
    generate_keypair,
    load_keypair,
    secure_client,
    secure_server,
)
from streamproc.feed.subscribe import EventSubscriber

ANY_PORT = "tcp://127.0.0.1:*"
WAIT_S = 10.0  # generous: a loaded CI box still completes a loopback CURVE handshake far sooner
QUIET_S = 1.0  # how long refused subscribers must stay silent while the allowed one keeps receiving
pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE support")


def make_event(track: int = 1) -> MatchEvent:
    return MatchEvent(
        event_id=make_event_id("cam1", track, "s-001", 1.0),
        stream_id="cam1",
        track_id=track,
        subject_id="s-001",
        subject_name="Jane Example",
        distance=0.41,
        distances=(0.41,),
        threshold=0.5,
        metric="l2",
        calibration=CalibrationInfo(fmr_target=1e-3, source="dlib.json", uncalibrated=False),
        k=1,
        n=1,
        frame_pts_s=1.0,
        captured_at=1_800_000_000.0,
        published_at=1_800_000_000.1,
        latency_ms={"end_to_end": 100.0},
        box=(1.0, 2.0, 3.0, 4.0),
        quality=QualityInfo(score=0.7, face_px=80.0, sharpness=240.0, yaw=None, detector_score=0.9),
    )


@dataclass(frozen=True)
class Keys:
    server: ServerSecurity
    client_a: ClientSecurity  # allowed
    client_b: ClientSecurity  # valid keys, not allowed
    b_public: Path
    allowed_dir: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    server_public, server_secret = generate_keypair(tmp_path / "server", "pipeline")
    a_public, a_secret = generate_keypair(tmp_path / "a", "client-a")
    b_public, b_secret = generate_keypair(tmp_path / "b", "client-b")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / a_public.name).write_bytes(a_public.read_bytes())
    return Keys(
        server=ServerSecurity(secret_key_file=server_secret, allowed_clients_dir=allowed),
        client_a=ClientSecurity(secret_key_file=a_secret, server_public_key_file=server_public),
        client_b=ClientSecurity(secret_key_file=b_secret, server_public_key_file=server_public),
        b_public=b_public,
        allowed_dir=allowed,
    )


@pytest.fixture
def ctx() -> Iterator[zmq.SyncContext]:
    context: zmq.SyncContext = zmq.Context()
    yield context
    context.destroy(linger=0)


def wait_monitor_event(sock: zmq.SyncSocket, wanted: int, timeout_s: float = WAIT_S) -> dict[str, object]:
    """The first monitor event of kind ``wanted`` on ``sock`` (its monitor must be started), or fail."""
    mon = sock.get_monitor_socket()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if mon.poll(100, zmq.POLLIN):
                msg = recv_monitor_message(mon)
                if msg["event"] == wanted:
                    return dict(msg)
        pytest.fail(f"no monitor event {wanted} within {timeout_s} s")
    finally:
        sock.disable_monitor()
        mon.close(linger=0)


def pump(pub: EventPublisher, allowed: EventSubscriber, refused: list[EventSubscriber], min_events: int) -> int:
    """Publish until ``allowed`` has received ``min_events`` over at least QUIET_S; fail if a refused one gets any."""
    start = time.monotonic()
    received = 0
    track = 0
    while received < min_events or time.monotonic() - start < QUIET_S:
        assert time.monotonic() - start < WAIT_S, f"allowed subscriber got only {received} events in {WAIT_S} s"
        track += 1
        pub.publish(make_event(track))
        if allowed.recv(timeout_s=0.02) is not None:
            received += 1
        for sub in refused:
            assert sub.recv(timeout_s=0) is None, "a subscriber without an allowed key received an event"
    return received


def test_only_the_allowed_key_receives(keys: Keys, ctx: zmq.SyncContext) -> None:
    with (
        EventPublisher(ANY_PORT, security=keys.server) as pub,
        EventSubscriber(pub.endpoint, context=ctx, security=keys.client_a) as sub_a,
        EventSubscriber(pub.endpoint, context=ctx, security=keys.client_b) as sub_b,
        EventSubscriber(pub.endpoint, context=ctx) as plain,
    ):
        assert pump(pub, sub_a, [sub_b, plain], min_events=20) >= 20
        # A keeps receiving after the others had ample time to connect, and they still get nothing.
        assert pump(pub, sub_a, [sub_b, plain], min_events=20) >= 20


def test_refused_client_handshake_fails_with_auth_error(keys: Keys, ctx: zmq.SyncContext) -> None:
    """The silence above is a refusal, not slowness: the server's ZAP handler answers B's key with 400."""
    with EventPublisher(ANY_PORT, security=keys.server) as pub:
        sock = ctx.socket(zmq.SUB)
        try:
            secure_client(sock, keys.client_b)
            sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            sock.connect(pub.endpoint)
            event = wait_monitor_event(sock, zmq.EVENT_HANDSHAKE_FAILED_AUTH)
            assert event["value"] == 400
        finally:
            sock.close(linger=0)


def test_reload_admits_a_newly_allowed_client(keys: Keys, ctx: zmq.SyncContext) -> None:
    auth = Authenticator(ctx, keys.allowed_dir)
    try:
        with (
            EventPublisher(ANY_PORT, context=ctx, security=keys.server, authenticator=auth) as pub,
            EventSubscriber(pub.endpoint, context=ctx, security=keys.client_a) as sub_a,
        ):
            pump(pub, sub_a, [], min_events=3)
            (keys.allowed_dir / keys.b_public.name).write_bytes(keys.b_public.read_bytes())
            auth.reload()
            assert len(auth.allowed_keys) == 2
            # ZeroMQ retries the refused connection, and the handler now admits B.
            with EventSubscriber(pub.endpoint, context=ctx, security=keys.client_b) as sub_b:
                pump(pub, sub_b, [], min_events=3)
    finally:
        auth.close()


def test_server_without_authenticator_fails_closed(keys: Keys, ctx: zmq.SyncContext) -> None:
    """libzmq admits any client when no ZAP handler runs, unless ZAP is enforced; secure_server enforces it."""
    server = ctx.socket(zmq.PUB)
    client = ctx.socket(zmq.SUB)
    try:
        secure_server(server, keys.server)
        server.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        server.bind(ANY_PORT)
        secure_client(client, keys.client_a)
        client.connect(server.getsockopt_string(zmq.LAST_ENDPOINT))
        wait_monitor_event(server, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    finally:
        client.close(linger=0)
        server.close(linger=0)


def test_one_authenticator_per_context(keys: Keys, ctx: zmq.SyncContext) -> None:
    with Authenticator(ctx, keys.allowed_dir):
        with pytest.raises(SecurityError, match="already has a ZAP authenticator"):
            Authenticator(ctx, keys.allowed_dir)
        with pytest.raises(SecurityError, match="already has a ZAP authenticator"):
            EventPublisher(ANY_PORT, context=ctx, security=keys.server)
    # Closed, the address is free again. libzmq releases an inproc endpoint asynchronously after its socket
    # closes (the context's reaper thread), so allow it a moment rather than racing it.
    deadline = time.monotonic() + 5.0
    while True:
        try:
            Authenticator(ctx, keys.allowed_dir).close()
            break
        except SecurityError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_authenticator_must_match_the_publisher_context(keys: Keys, ctx: zmq.SyncContext) -> None:
    with Authenticator(ctx, keys.allowed_dir) as auth:
        with pytest.raises(ValueError, match="authenticator"):
            EventPublisher(ANY_PORT, security=keys.server, authenticator=auth)
        with pytest.raises(ValueError, match="authenticator"):
            EventPublisher(ANY_PORT, context=ctx, authenticator=auth)


def test_bad_key_files_are_one_line_errors_naming_the_file(keys: Keys, tmp_path: Path) -> None:
    missing = tmp_path / "nope.key_secret"
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("hello\n")
    short = tmp_path / "short.key_secret"
    short.write_text('curve\n    public-key = "abc"\n    secret-key = "def"\n')
    public_only = keys.client_a.server_public_key_file
    cases = [(missing, "cannot read"), (garbage, "not a ZeroMQ certificate"), (short, "40-character")]
    cases.append((public_only, "no secret key"))
    for path, words in cases:
        with pytest.raises(SecurityError, match=words) as info:
            load_keypair(path)
        assert str(path) in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(SecurityError, match=r"nope\.key_secret"):
        EventSubscriber(ANY_PORT.replace("*", "1"), security=ClientSecurity(missing, public_only))
    with pytest.raises(SecurityError, match=r"nope\.key_secret"):
        EventPublisher(ANY_PORT, security=ServerSecurity(missing, keys.allowed_dir))
    with pytest.raises(SecurityError, match="allowed-clients directory"):
        EventPublisher(ANY_PORT, security=ServerSecurity(keys.server.secret_key_file, tmp_path / "none"))
    (keys.allowed_dir / "typo.key").write_text("not a key\n")
    with pytest.raises(SecurityError, match=r"typo\.key"):
        EventPublisher(ANY_PORT, security=keys.server)


def test_mismatched_keypair_is_refused(keys: Keys, tmp_path: Path) -> None:
    a = keys.client_a.secret_key_file.read_text()
    b = keys.client_b.secret_key_file.read_text()
    b_public_line = next(line for line in b.splitlines() if "public-key" in line)
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text("\n".join(b_public_line if "public-key" in line else line for line in a.splitlines()))
    with pytest.raises(SecurityError, match="does not belong"):
        load_keypair(mixed)


def test_client_security_from_options(tmp_path: Path) -> None:
    secret, server = tmp_path / "c.key_secret", tmp_path / "s.key"
    assert client_security_from_options(None, None) is None
    assert client_security_from_options(secret, server) == ClientSecurity(secret, server)
    for args in ((secret, None), (None, server)):
        with pytest.raises(StreamprocError, match="go together"):
            client_security_from_options(*args)


def test_generate_keypair_refuses_bad_names_and_overwrites(tmp_path: Path) -> None:
    public, secret = generate_keypair(tmp_path, "k")
    before = secret.read_bytes()
    with pytest.raises(SecurityError, match="already exists"):
        generate_keypair(tmp_path, "k")
    public.unlink()  # even half a pair is never replaced
    with pytest.raises(SecurityError, match="already exists"):
        generate_keypair(tmp_path, "k")
    assert secret.read_bytes() == before
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(SecurityError, match="key name"):
            generate_keypair(tmp_path, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key_secret"]  # no temporary leftovers


def test_cli_keys_generate(tmp_path: Path) -> None:
    runner = CliRunner()
    out_dir = tmp_path / "keys"
    result = runner.invoke(keys_app, ["generate", "--dir", str(out_dir), "--name", "pipeline"])
    assert result.exit_code == 0, result.output
    public, secret = out_dir / "pipeline.key", out_dir / "pipeline.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    public_key, secret_key = load_keypair(secret)
    assert str(public) in result.output
    assert public_key.decode() in result.output
    assert secret_key.decode() not in result.output
    assert "allowed-clients directory" in result.output
    public_text = public.read_text()
    assert secret_key.decode() not in public_text
    assert "secret-key" not in public_text
    assert public_key.decode() in public_text

    again = runner.invoke(keys_app, ["generate", "--dir", str(out_dir), "--name", "pipeline"])
    assert again.exit_code != 0
    assert isinstance(again.exception, SecurityError)
    assert "refusing to overwrite" in str(again.exception)
    assert load_keypair(secret) == (public_key, secret_key)
