"""Replay: a subscriber that was down gets the gap from the journal exactly once, then the live feed.

Real ZeroMQ sockets on 127.0.0.1 (ports chosen by the OS), real SQLite files in tmp_path, real processes.
No fixed sleeps decide an outcome: waits are polling loops with deadlines.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from support import STREAMPROC, make_event
from typer.testing import CliRunner

from streamproc.cli.events import events_app
from streamproc.errors import StreamprocError
from streamproc.feed.codec import EventEndpointError
from streamproc.feed.journal import EventJournal, JournaledPublisher
from streamproc.feed.publish import EventPublisher
from streamproc.feed.replay import MAX_BATCH, ReplayError, ReplayServer, fetch_since, iter_since
from streamproc.feed.schema import MatchEvent

ANY_PORT = "tcp://127.0.0.1:*"


class Feed:
    """A journaled publisher and its replay server, as the pipeline runs them."""

    def __init__(self, path: Path, pub_endpoint: str = ANY_PORT, replay_endpoint: str = ANY_PORT) -> None:
        self.journal = EventJournal(path, sync="normal")
        self.requests = 0
        self.pub = JournaledPublisher(EventPublisher(pub_endpoint), self.journal)
        self.replay = ReplayServer(self.journal, replay_endpoint, on_request=self._count)

    @classmethod
    def on(cls, path: Path, pub_endpoint: str, replay_endpoint: str) -> Feed:
        """A restarted feed: the same journal file and endpoints as a closed one."""
        return cls(path, pub_endpoint, replay_endpoint)

    def _count(self) -> None:
        self.requests += 1

    def publish(self, *tracks: int, stream: str = "cam1") -> None:
        for track in tracks:
            assert self.pub.publish(make_event(stream=stream, track=track))

    def close(self) -> None:
        self.replay.close()
        self.pub.close()


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    f = Feed(tmp_path / "journal.sqlite")
    try:
        yield f
    finally:
        f.close()


def request(endpoint: str, frames: list[bytes], kind: int = zmq.REQ) -> list[bytes]:
    """One raw request/reply on a fresh socket, failing the test after 10 s."""
    ctx: zmq.SyncContext = zmq.Context()
    sock = ctx.socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 10_000)
        sock.connect(endpoint)
        sock.send_multipart(frames)
        return sock.recv_multipart()
    finally:
        sock.close(linger=0)
        ctx.term()


# ------------------------------------------------------------------------------------------ server
def test_server_binds_any_port_and_replays_in_seq_order(feed: Feed) -> None:
    assert feed.replay.endpoint.startswith("tcp://127.0.0.1:")
    assert not feed.replay.endpoint.endswith("*")
    feed.publish(*range(10))
    got = fetch_since(feed.replay.endpoint, 0, timeout_s=10)
    assert [e.seq for e in got] == list(range(1, 11))
    assert [e.track_id for e in got if isinstance(e, MatchEvent)] == list(range(10))
    assert [e.seq for e in fetch_since(feed.replay.endpoint, 7, timeout_s=10)] == [8, 9, 10]
    assert feed.requests == feed.replay.requests == 4  # two fetches, each ends with an empty batch


def test_empty_ranges_give_empty_lists(feed: Feed) -> None:
    assert fetch_since(feed.replay.endpoint, 0, timeout_s=10) == []
    feed.publish(1, 2)
    assert fetch_since(feed.replay.endpoint, 2, timeout_s=10) == []
    assert fetch_since(feed.replay.endpoint, 10**12, timeout_s=10) == []
    assert request(feed.replay.endpoint, [b"since", b"2"]) == [b"events"]


def test_limit_and_batches_larger_than_one_reply(feed: Feed) -> None:
    for i in range(MAX_BATCH + 5):
        feed.journal.append(make_event(track=i, face_jpeg_b64=None))
    reply = request(feed.replay.endpoint, [b"since", b"0", b"3"])
    assert reply[0] == b"events"
    assert [MatchEvent.model_validate_json(b).seq for b in reply[1:]] == [1, 2, 3]
    assert len(request(feed.replay.endpoint, [b"since", b"0", b"999999"])) == 1 + MAX_BATCH
    batches = list(iter_since(feed.replay.endpoint, 0, timeout_s=10))
    assert [len(b) for b in batches] == [MAX_BATCH, 5]
    assert [e.seq for b in batches for e in b] == list(range(1, MAX_BATCH + 6))


def test_dealer_clients_with_or_without_delimiter(feed: Feed) -> None:
    feed.publish(1, 2, 3)
    for frames in ([b"since", b"1"], [b"", b"since", b"1"]):
        reply = request(feed.replay.endpoint, frames, kind=zmq.DEALER)
        if reply[0] == b"":
            reply = reply[1:]
        assert reply[0] == b"events"
        assert [MatchEvent.model_validate_json(b).seq for b in reply[1:]] == [2, 3]


@pytest.mark.parametrize(
    ("frames", "fragment"),
    [
        ([b"bogus"], "unknown request"),
        ([b"since"], "1 or 2 arguments"),
        ([b"since", b"1", b"2", b"3"], "1 or 2 arguments"),
        ([b"since", b"-1"], "non-negative"),
        ([b"since", b"abc"], "non-negative"),
        ([b"since", b"9" * 40], "non-negative"),
        ([b"since", b"1", b"0"], "at least 1"),
    ],
)
def test_bad_requests_get_error_replies_and_the_server_goes_on(feed: Feed, frames: list[bytes], fragment: str) -> None:
    reply = request(feed.replay.endpoint, frames)
    assert reply[0] == b"error"
    assert len(reply) == 2
    assert fragment in reply[1].decode()
    feed.publish(1)
    assert [e.seq for e in fetch_since(feed.replay.endpoint, 0, timeout_s=10)] == [1]


def test_error_reply_raises_replay_error() -> None:
    ctx: zmq.SyncContext = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")

        def answer() -> None:
            if router.poll(10_000):
                envelope = router.recv_multipart()[:2]
                router.send_multipart([*envelope, b"error", b"journal on fire"])

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(ReplayError, match="journal on fire"):
            fetch_since(f"tcp://127.0.0.1:{port}", 0, timeout_s=10)
        thread.join()
    finally:
        router.close(linger=0)
        ctx.term()


def test_erased_and_pruned_events_are_not_replayed(feed: Feed) -> None:
    for i in range(6):
        feed.pub.publish(make_event(track=i, subject="s-gone" if i % 2 else "s-kept"))
    assert feed.journal.erase_subject("s-gone") == 3
    assert [e.seq for e in fetch_since(feed.replay.endpoint, 0, timeout_s=10)] == [1, 3, 5]
    feed.journal.prune(max_age_s=None, max_events=1)
    assert [e.seq for e in fetch_since(feed.replay.endpoint, 0, timeout_s=10)] == [5]


def test_missing_server_is_a_one_line_error_after_the_timeout() -> None:
    ctx: zmq.SyncContext = zmq.Context()
    probe = ctx.socket(zmq.REP)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(linger=0)
    ctx.term()
    start = time.monotonic()
    with pytest.raises(ReplayError) as info:
        fetch_since(f"tcp://127.0.0.1:{port}", 0, timeout_s=0.3)
    assert 0.25 <= time.monotonic() - start < 5
    assert "no reply" in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, StreamprocError)
    with pytest.raises(ReplayError, match="cannot connect"):
        fetch_since("not-an-endpoint", 0, timeout_s=0.3)


def test_bind_failure_and_prompt_close(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as journal:
        server = ReplayServer(journal, ANY_PORT)
        with pytest.raises(EventEndpointError, match="replay endpoint"):
            ReplayServer(journal, server.endpoint)
        start = time.monotonic()
        server.close()
        server.close()
        assert time.monotonic() - start < 1.0
        assert not server._thread.is_alive()


# ----------------------------------------------------------------------------- events tail --since
runner = CliRunner()


def tail_args(feed: Feed, *more: str) -> list[str]:
    return ["tail", feed.pub.endpoint, "--replay", feed.replay.endpoint, *more]


def seqs_of(stdout: str) -> list[int]:
    return [MatchEvent.model_validate_json(line).seq or 0 for line in stdout.splitlines()]


def test_tail_gets_the_gap_then_live_events_exactly_once(feed: Feed) -> None:
    """The acceptance test: 50 events while nobody listens, then tail --since 0, with 5 more published live."""
    feed.publish(*range(50))
    result: dict[str, Any] = {}

    def run_tail() -> None:
        result["r"] = runner.invoke(
            events_app,
            [*tail_args(feed, "--since", "0"), "--count", "55", "--timeout", "30", "--json"],
        )

    thread = threading.Thread(target=run_tail)
    thread.start()
    deadline = time.monotonic() + 30
    while feed.requests == 0:  # the tail has subscribed and is fetching the gap
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for track in range(50, 55):  # published while the gap is fetched or after: either way exactly once
        feed.publish(track)
    thread.join()
    res = result["r"]
    assert res.exit_code == 0, res.output
    got = [MatchEvent.model_validate_json(line) for line in res.stdout.splitlines()]
    assert [e.seq for e in got] == list(range(1, 56))
    assert [e.track_id for e in got] == list(range(55))


def test_tail_since_a_seq_skips_what_was_seen_and_filters_topics(feed: Feed) -> None:
    for i in range(10):
        feed.publish(i, stream=f"cam{1 + i % 2}")
    res = runner.invoke(
        events_app,
        [*tail_args(feed, "--since", "4"), "--topic", "match.cam2", "--count", "3", "--timeout", "30", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert seqs_of(res.stdout) == [6, 8, 10]


def test_tail_since_times_out_with_exit_1_when_the_gap_is_short(feed: Feed) -> None:
    feed.publish(1, 2)
    res = runner.invoke(
        events_app,
        [*tail_args(feed, "--since", "0"), "--count", "3", "--timeout", "0.5"],
    )
    assert res.exit_code == 1
    assert "2 of 3" in res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("seq=1")


def test_tail_since_needs_replay_and_a_reachable_one(feed: Feed) -> None:
    res = runner.invoke(events_app, ["tail", feed.pub.endpoint, "--since", "0", "--count", "1"])
    assert res.exit_code == 2
    missing = runner.invoke(
        events_app,
        [
            *["tail", feed.pub.endpoint, "--since", "0", "--replay", "tcp://127.0.0.1:1"],
            *["--replay-timeout", "0.2", "--count", "1", "--timeout", "1"],
        ],
    )
    # Not answering (yet) is what a restarting pipeline looks like: it says it waits, and --timeout bounds it.
    assert missing.exit_code == 1, missing.output
    assert "waiting" in missing.stderr and "tcp://127.0.0.1:1" in missing.stderr


def test_tail_as_a_real_process_gets_gap_then_live(feed: Feed) -> None:
    feed.publish(*range(50))
    tail = subprocess.Popen(
        [STREAMPROC, "events", *tail_args(feed, "--since", "0"), "--count", "55", "--timeout", "60", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stdout is not None
    try:
        lines = [tail.stdout.readline() for _ in range(50)]
        gap = [MatchEvent.model_validate_json(line) for line in lines]
        assert [e.seq for e in gap] == list(range(1, 51))
        feed.publish(*range(50, 55))
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    live = [MatchEvent.model_validate_json(line) for line in out.splitlines()]
    assert [e.seq for e in live] == [51, 52, 53, 54, 55]
    assert [e.track_id for e in live] == list(range(50, 55))


def test_tail_since_survives_a_pipeline_restart_and_resumes_after_what_it_printed(tmp_path: Path) -> None:
    """The "I was away" mode outlives a restart: it says it waits, then prints the rest exactly once."""
    path = tmp_path / "journal.sqlite"
    first = Feed(path)
    first.publish(1, 2, 3)
    pub_endpoint, replay_endpoint = first.pub.endpoint, first.replay.endpoint
    tail = subprocess.Popen(
        [
            *[STREAMPROC, "events", "tail", pub_endpoint, "--replay", replay_endpoint, "--since", "0"],
            *["--replay-timeout", "0.3", "--count", "6", "--timeout", "60", "--json"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stdout is not None and tail.stderr is not None
    second: Feed | None = None
    try:
        assert seqs_of("".join(tail.stdout.readline() for _ in range(3))) == [1, 2, 3]
        first.close()  # the pipeline stops: publisher, replay endpoint and journal go away
        assert "waiting" in tail.stderr.readline()  # it says so at once, and keeps going
        time.sleep(1.0)  # several replay timeouts pass: the old client exited 2 here
        assert tail.poll() is None
        second = Feed.on(path, pub_endpoint, replay_endpoint)  # the pipeline is back on the same endpoints
        second.publish(4, 5, 6)
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
        if second is not None:
            second.close()
    assert tail.returncode == 0, err
    assert seqs_of(out) == [4, 5, 6]
    assert "Traceback" not in err
