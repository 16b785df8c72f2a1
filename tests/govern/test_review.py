"""Human review: the two-person rule, refusals that write nothing, the audit trail, publishing and the CLI.

Everything is real: SQLite journals and hash-chained audit logs in tmp_path, ZeroMQ sockets on 127.0.0.1,
threads with their own journal connections, and the ``streamproc`` console script as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry
from support import STREAMPROC, make_event
from typer.testing import CliRunner

from streamproc.cli.events import events_app
from streamproc.config import EventsConfig, JournalConfig
from streamproc.feed.codec import decode
from streamproc.feed.event_feed import EventFeed, awaiting_publication, publish_pending_reviews
from streamproc.feed.journal import EventJournal
from streamproc.feed.publish import EventPublisher
from streamproc.feed.replay import ReplayServer, fetch_since
from streamproc.feed.schema import MatchEvent, ReviewEvent
from streamproc.govern.review import (
    ReviewError,
    ReviewRefusedError,
    decide,
    states,
)
from streamproc.metrics import PipelineMetrics
from streamproc.records.audit import AuditLog
from streamproc.records.chain import AuditRecord

ANY_PORT = "tcp://127.0.0.1:*"


class Store:
    """A journal holding two match events, and an audit log: what `review decide` works on."""

    def __init__(self, root: Path) -> None:
        self.path = root / "events.sqlite"
        self.journal = EventJournal(self.path)
        self.audit = AuditLog.create(root / "audit", actor="test")
        stored = [self.journal.append(make_event(track=t)) for t in (1, 2)]
        assert all(stored)
        self.events: list[MatchEvent] = [e for e in stored if e is not None]

    def decide(
        self, index: int, decision: str, reviewer: str, note: str = "compared the face", required: int = 2
    ) -> ReviewEvent:
        return decide(
            self.journal,
            self.audit,
            self.events[index].event_id,
            decision,  # type: ignore[arg-type]  # malformed decisions are part of what is tested
            reviewer,
            note,
            required=required,
        )

    def reviews_audited(self) -> list[AuditRecord]:
        return [r for r in self.audit.records() if r.action == "review"]

    def snapshot(self) -> tuple[int, list[object], bytes]:
        """Everything a decision could change: the journal's records and seq, and the audit log's bytes."""
        return self.journal.last_seq(), list(self.journal.records_since(0)), self.audit.path.read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    try:
        yield s
    finally:
        s.journal.close()


# ------------------------------------------------------------------------------------------- rules
def test_two_person_rule(store: Store) -> None:
    first = store.decide(0, "confirm", "alice")
    assert (first.status, first.confirmations, first.required_confirmations) == ("pending", ("alice",), 2)
    assert first.seq == 3  # after the two match events: one sequence for both kinds
    second = store.decide(0, "confirm", "bob")
    assert (second.status, second.confirmations, second.seq) == ("confirmed", ("alice", "bob"), 4)
    before = store.snapshot()
    with pytest.raises(ReviewRefusedError, match="already confirmed"):
        store.decide(0, "reject", "carol")
    assert store.snapshot() == before
    assert [s.status for s in states(store.journal)] == ["confirmed", "pending"]
    assert [s.event.track_id for s in states(store.journal, "pending")] == [2]


def test_a_single_reject_wins(store: Store) -> None:
    store.decide(1, "confirm", "alice")
    rejected = store.decide(1, "reject", "bob", note="different ear shape")
    assert (rejected.status, rejected.confirmations) == ("rejected", ("alice",))
    with pytest.raises(ReviewRefusedError, match="already rejected"):
        store.decide(1, "confirm", "carol")
    # A reject before any confirm is final too, whatever the number of confirmations required.
    assert store.decide(0, "reject", "dave", required=1).status == "rejected"


def test_one_confirmation_when_configured_so(store: Store) -> None:
    assert store.decide(0, "confirm", "alice", required=1).status == "confirmed"


def test_the_same_reviewer_cannot_decide_twice(store: Store) -> None:
    store.decide(0, "confirm", "alice")
    before = store.snapshot()
    for decision in ("confirm", "reject"):
        with pytest.raises(ReviewRefusedError, match="alice already decided") as info:
            store.decide(0, decision, "alice")
        assert "\n" not in str(info.value)
    assert store.snapshot() == before


def test_unknown_event_is_refused_and_nothing_is_written(store: Store) -> None:
    before = store.snapshot()
    with pytest.raises(ReviewRefusedError, match=f"no match event {'0' * 32}"):
        decide(store.journal, store.audit, "0" * 32, "confirm", "alice", "looks alike", required=2)
    assert store.snapshot() == before
    assert store.audit.verify() == []


@pytest.mark.parametrize(
    ("reviewer", "note", "fragment"),
    [
        ("", "a note", "reviewer id is required"),
        ("   ", "a note", "reviewer id is required"),
        ("alice smith", "a note", "reviewer id"),
        ("alice", "", "note is required"),
        ("alice", " \n ", "note is required"),
        ("alice", "x" * 5000, "at most"),
    ],
)
def test_reviewer_and_note_are_required(store: Store, reviewer: str, note: str, fragment: str) -> None:
    before = store.snapshot()
    with pytest.raises(ReviewError, match=fragment) as info:
        store.decide(0, "confirm", reviewer, note=note)
    assert not isinstance(info.value, ReviewRefusedError)  # malformed input is a usage error, not a refusal
    assert store.snapshot() == before


def test_every_decision_is_audited_in_journal_order_and_the_chain_verifies(store: Store) -> None:
    made = [
        store.decide(0, "confirm", "alice", note="same scar"),
        store.decide(1, "reject", "alice", note="not him"),
        store.decide(0, "confirm", "bob", note="agree with alice"),
    ]
    audited = store.reviews_audited()
    assert [r.actor for r in audited] == ["alice", "alice", "bob"]
    assert [r.details["journal_seq"] for r in audited] == [m.seq for m in made] == [3, 4, 5]
    for record, review in zip(audited, made, strict=True):
        assert record.subject_id == review.subject_id
        assert record.details["event_id"] == review.event_id
        assert record.details["decision"] == review.decision
        assert record.details["status"] == review.status
        assert record.details["note"] == review.note
        assert record.details["review_id"] == review.review_id
    assert store.audit.verify() == []


def test_concurrent_reviewers_are_serialised(store: Store, tmp_path: Path) -> None:
    """Six reviewers on six connections confirm at once: two succeed (then it is confirmed), four are refused."""
    event_id = store.events[0].event_id
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def review(name: str) -> None:
        with EventJournal(store.path) as journal:
            barrier.wait()
            try:
                decide(journal, store.audit, event_id, "confirm", name, "same person", required=2)
                outcomes.append("stored")
            except ReviewRefusedError:
                outcomes.append("refused")

    threads = [threading.Thread(target=review, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 4 + ["stored"] * 2
    reviews = store.journal.reviews_of(event_id)
    assert [r.status for r in reviews] == ["pending", "confirmed"]
    assert [r.details["journal_seq"] for r in store.reviews_audited()] == [r.seq for r in reviews]
    assert store.audit.verify() == []


# -------------------------------------------------------------------------------------- publishing
def _subscribe(endpoint: str) -> tuple[zmq.SyncContext, zmq.SyncSocket]:
    ctx: zmq.SyncContext = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for prefix in (b"match.", b"review."):
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    return ctx, sock


def _next_review(sock: zmq.SyncSocket, timeout_s: float = 10.0) -> list[bytes]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(100, zmq.POLLIN):
            frames = sock.recv_multipart()
            if frames[0].startswith(b"review."):
                return frames
    raise AssertionError("no review event arrived")


def test_the_feed_publishes_stored_decisions_once_on_the_review_topic(store: Store, tmp_path: Path) -> None:
    stored_while_down = store.decide(0, "confirm", "alice")
    assert awaiting_publication(store.journal) == [stored_while_down]
    config = EventsConfig(endpoint=ANY_PORT, journal=JournalConfig(path=store.path, sync="normal"))
    with EventFeed(config, PipelineMetrics(CollectorRegistry())) as feed:
        ctx, sock = _subscribe(feed.endpoint)
        try:
            track = 100
            while not sock.poll(50, zmq.POLLIN):  # slow joiner: match events until the subscription is in place
                track += 1
                assert track < 400, "subscriber never connected"
                assert feed.publish(make_event(track=track))
            assert feed.publish_pending_reviews() == 1  # the decision made while no pipeline ran
            frames = _next_review(sock)
            assert frames[0] == b"review.cam1"
            got = decode(frames)
            assert isinstance(got, ReviewEvent)
            assert got == stored_while_down
            assert feed.publish_pending_reviews() == 0  # nothing twice
            confirmed = store.decide(0, "confirm", "bob")
            assert feed.publish_pending_reviews() == 1
            again = decode(_next_review(sock))
            assert again == confirmed
            assert isinstance(again, ReviewEvent) and again.status == "confirmed"
        finally:
            sock.close(linger=0)
            ctx.term()
    assert awaiting_publication(store.journal) == []
    with EventFeed(config, PipelineMetrics(CollectorRegistry())) as restarted:
        assert restarted.publish_pending_reviews() == 0  # the mark is kept in the journal


def test_a_feed_without_journal_has_no_decisions_to_publish() -> None:
    with EventFeed(EventsConfig(endpoint=ANY_PORT), PipelineMetrics(CollectorRegistry())) as feed:
        assert feed.publish_pending_reviews() == 0


def test_publish_pending_reviews_sends_in_seq_order_across_batches(store: Store) -> None:
    for i in range(5):
        store.decide(1, "confirm", f"r{i}", required=10)
    sent: list[ReviewEvent] = []
    assert publish_pending_reviews(store.journal, sent.append, batch=2) == 5
    assert [r.seq for r in sent] == [3, 4, 5, 6, 7]
    assert publish_pending_reviews(store.journal, sent.append) == 0


def test_replay_returns_matches_and_decisions_in_seq_order(store: Store) -> None:
    store.decide(0, "confirm", "alice")
    third = store.journal.append(make_event(track=3))
    assert third is not None
    store.decide(1, "reject", "bob")
    with ReplayServer(store.journal, ANY_PORT) as server:
        got = fetch_since(server.endpoint, 0, timeout_s=10)
        assert [(type(e).__name__, e.seq) for e in got] == [
            ("MatchEvent", 1),
            ("MatchEvent", 2),
            ("ReviewEvent", 3),
            ("MatchEvent", 4),
            ("ReviewEvent", 5),
        ]
        assert [e.seq for e in fetch_since(server.endpoint, 3, timeout_s=10)] == [4, 5]
        with EventPublisher(ANY_PORT) as silent:
            args = ["tail", silent.endpoint, "--since", "2", "--replay", server.endpoint, "--count", "3"]
            result = CliRunner().invoke(events_app, [*args, "--timeout", "20"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "confirm by alice -> pending (1/2 confirmations)" in lines[0]
    assert "review: pending" in lines[1] and lines[1].endswith("seq=4")
    assert "reject by bob -> rejected" in lines[2]


# -------------------------------------------------------------------------------------------- CLI
PASSWORD = "correct horse battery"


def _cli(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [STREAMPROC, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        input=None if stdin is None else stdin + "\n",
    )


def _reviewers_add(
    config: Path,
    rid: str,
    *,
    name: str | None = None,
    role: str | None = None,
    operator: str = "admin-1",
    stdin: str = PASSWORD,
) -> subprocess.CompletedProcess[str]:
    """`review reviewers add` for one account (name defaults to the id titled); the password goes on stdin."""
    role_args = () if role is None else ("--role", role)
    return _cli(
        "review",
        "reviewers",
        "add",
        "--config",
        config,
        "--id",
        rid,
        "--name",
        rid.title() if name is None else name,
        *role_args,
        "--operator",
        operator,
        stdin=stdin,
    )


def _add_reviewers(config: Path, *ids: str) -> None:
    for rid in ids:
        added = _reviewers_add(config, rid)
        assert added.returncode == 0, added.stderr


@pytest.mark.slow
def test_cli_decide_list_show(tmp_path: Path) -> None:
    journal_path = tmp_path / "events.sqlite"
    with EventJournal(journal_path) as journal:
        event = journal.append(make_event(track=5, template_label=17, gallery_size=250))
    assert event is not None
    eid = event.event_id
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources: [{{id: cam1, url: {tmp_path / 'clip.mp4'}}}]\n"
        f"watchlist: {{path: {tmp_path / 'wl'}}}\n"
        f"events: {{journal: {{path: {journal_path}}}}}\n"
        f"review: {{accounts: {tmp_path / 'reviewers.sqlite'}}}\n",
        encoding="utf-8",
    )
    _add_reviewers(config, "alice", "bob")
    decide_args = ("review", "decide", eid[:12], "--config", config, "--note")

    unknown = _cli(
        "review", "decide", "f" * 32, "--config", config, "--note", "x", "--confirm", "--as", "alice", stdin=PASSWORD
    )
    assert unknown.returncode == 1 and f"no match event {'f' * 32}" in unknown.stderr
    assert [r.action for r in AuditLog.open(tmp_path / "wl").records()][1:] == ["reviewer_add"] * 2  # refused: none
    typed = _cli(*decide_args, "x", "--confirm", "--reviewer", "mallory")
    assert typed.returncode == 2 and "--reviewer" in typed.stderr  # no self-declared reviewer any more
    anonymous = _cli(*decide_args, "x", "--confirm")
    assert anonymous.returncode == 2 and "--as ID" in anonymous.stderr
    wrong = _cli(*decide_args, "x", "--confirm", "--as", "alice", stdin="not the password")
    assert wrong.returncode == 2 and "wrong reviewer id or password" in wrong.stderr

    first = _cli(*decide_args, "same scar", "--confirm", "--as", "alice", stdin=PASSWORD)
    assert first.returncode == 0, first.stderr
    assert f"{eid}: confirm by alice" in first.stdout and "status pending (1/2 confirmations)" in first.stdout
    assert "await publication" in first.stderr
    twice = _cli(*decide_args, "again", "--reject", "--as", "alice", stdin=PASSWORD)
    assert twice.returncode == 1
    assert twice.stderr.strip().startswith("refused:") and len(twice.stderr.strip().splitlines()) == 1
    key = tmp_path / "bob.key"
    issued = _cli(
        "review", "reviewers", "issue-key", "--config", config, "--id", "bob", "--out", key, "--operator", "admin-1"
    )
    assert issued.returncode == 0, issued.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    second = _cli(*decide_args, "agree", "--confirm", "--key-file", key)
    assert second.returncode == 0, second.stderr
    assert "status confirmed (2/2 confirmations)" in second.stdout

    neither = _cli(*decide_args, "x", "--as", "alice", stdin=PASSWORD)
    assert neither.returncode == 2 and "exactly one of --confirm or --reject" in neither.stderr
    no_journal = tmp_path / "nojournal.yaml"
    no_journal.write_text(config.read_text(encoding="utf-8").replace("events:", "# events:"), encoding="utf-8")
    missing = _cli(
        "review", "decide", eid, "--config", no_journal, "--note", "x", "--confirm", "--as", "alice", stdin=PASSWORD
    )
    assert missing.returncode == 2
    assert "events.journal.path is not set" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1

    listed = _cli("review", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    assert eid in listed.stdout and "confirmed" in listed.stdout and "2/2 alice, bob" in listed.stdout
    pending = _cli("review", "list", "--config", config, "--status", "pending")
    assert pending.returncode == 0 and eid not in pending.stdout
    assert _cli("review", "list", "--config", config, "--status", "maybe").returncode == 2

    shown = _cli("review", "show", eid[:8], "--config", config, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["status"] == "confirmed"
    assert [d["reviewer"] for d in data["decisions"]] == ["alice", "bob"]
    assert "face_jpeg_b64" not in data["event"] and data["event"]["face_jpeg_bytes"] > 0
    assert (data["event"]["template_label"], data["event"]["gallery_size"]) == (17, 250)
    text = _cli("review", "show", eid, "--config", config)
    assert text.returncode == 0, text.stderr
    assert "bytes JPEG (not shown)" in text.stdout and "/9j/" not in text.stdout
    assert "template 17" in text.stdout and "same scar" in text.stdout

    verified = _cli("audit", "verify", "--watchlist", tmp_path / "wl")
    assert verified.returncode == 0, verified.stderr
    records = list(AuditLog.open(tmp_path / "wl").records())
    reviews = [r for r in records if r.action == "review"]
    assert [(r.actor, r.details["status"]) for r in reviews] == [("alice", "pending"), ("bob", "confirmed")]
    assert [r.details["reviewer"] for r in records if r.action == "reviewer_add"] == ["alice", "bob"]

    not_supervisor = _cli("review", "reopen", eid, "--config", config, "--note", "x", "--as", "alice", stdin=PASSWORD)
    assert not_supervisor.returncode == 1 and "only a supervisor" in not_supervisor.stderr
    sup = _reviewers_add(config, "sam", role="supervisor")
    assert sup.returncode == 0, sup.stderr
    reopened = _cli(
        "review", "reopen", eid[:6], "--config", config, "--note", "new photo", "--as", "sam", stdin=PASSWORD
    )
    assert reopened.returncode == 0, reopened.stderr
    assert "pending" in _cli("review", "show", eid, "--config", config).stdout.splitlines()[0]


@pytest.mark.slow
def test_cli_prefixes_and_saving_the_face(tmp_path: Path) -> None:
    journal_path = tmp_path / "events.sqlite"
    twins = ("abcd" + "0" * 28, "abcd" + "1" * 28, "abce" + "2" * 28)  # two share the prefix abcd
    with EventJournal(journal_path) as journal:
        stored = [journal.append(make_event(track=t, event_id=eid)) for t, eid in enumerate(twins)]
    ids = [e.event_id for e in stored if e is not None]
    assert ids == list(twins)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources: [{{id: cam1, url: {tmp_path / 'clip.mp4'}}}]\n"
        f"watchlist: {{path: {tmp_path / 'wl'}}}\n"
        f"events: {{journal: {{path: {journal_path}}}}}\n",
        encoding="utf-8",
    )
    _add_reviewers(config, "alice")
    ambiguous = _cli(
        "review", "decide", "abcd", "--confirm", "--note", "x", "--config", config, "--as", "alice", stdin=PASSWORD
    )
    assert ambiguous.returncode == 2 and "ambiguous: 2 events match" in ambiguous.stderr
    assert twins[0] in ambiguous.stderr and twins[1] in ambiguous.stderr and twins[2] not in ambiguous.stderr
    unique = _cli("review", "show", "abce", "--config", config, "--json")
    assert unique.returncode == 0 and json.loads(unique.stdout)["event"]["event_id"] == twins[2]
    none = _cli("review", "show", "ffff", "--config", config)
    assert none.returncode == 2 and "no match event whose id starts with ffff" in none.stderr
    short = _cli("review", "show", ids[0][:3], "--config", config)
    assert short.returncode == 2 and "4 to 32 hex" in short.stderr

    face = tmp_path / "face.jpg"
    anonymous = _cli("review", "show", ids[0][:12], "--config", config, "--save-face", face)
    assert anonymous.returncode == 2 and not face.exists()
    saved = _cli(
        "review", "show", ids[0][:12], "--config", config, "--save-face", face, "--as", "alice", stdin=PASSWORD
    )
    assert saved.returncode == 0, saved.stderr
    assert face.read_bytes().startswith(b"\xff\xd8\xff") and face.stat().st_mode & 0o777 == 0o600
    again = _cli("review", "show", ids[0], "--config", config, "--save-face", face, "--as", "alice", stdin=PASSWORD)
    assert again.returncode == 2 and "exists" in again.stderr
    views = [r for r in AuditLog.open(tmp_path / "wl").records() if r.action == "review_view"]
    assert [(r.actor, r.details["event_id"]) for r in views] == [("alice", ids[0])]
    assert str(face) in str(views[0].details["view"])


@pytest.mark.slow
def test_cli_reviewer_accounts(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources: [{{id: cam1, url: {tmp_path / 'clip.mp4'}}}]\nwatchlist: {{path: {tmp_path / 'wl'}}}\n",
        encoding="utf-8",
    )
    none = _cli("review", "reviewers", "list", "--config", config)
    assert none.returncode == 2 and "reviewers add" in none.stderr
    weak = _reviewers_add(config, "carol", stdin="short")
    assert weak.returncode == 2 and "at least 12" in weak.stderr and not (tmp_path / "wl").exists()
    _add_reviewers(config, "carol")
    stored = (tmp_path / "wl" / "reviewers.sqlite").read_bytes()
    assert PASSWORD.encode() not in stored and b"scrypt$" in stored
    assert (tmp_path / "wl" / "reviewers.sqlite").stat().st_mode & 0o777 == 0o600
    dup = _reviewers_add(config, "carol", name="C", operator="a")
    assert dup.returncode == 2 and "already exists" in dup.stderr
    sup = _reviewers_add(config, "sam", role="supervisor")
    assert sup.returncode == 0, sup.stderr
    assert (
        _cli("review", "reviewers", "disable", "--config", config, "--id", "carol", "--operator", "a").returncode == 0
    )
    listed = _cli("review", "reviewers", "list", "--config", config)
    assert listed.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 3}
    assert "disabled" in rows["carol"] and "supervisor" in rows["sam"] and "active" in rows["sam"]
    assert (
        _cli("review", "reviewers", "disable", "--config", config, "--id", "nobody", "--operator", "a").returncode == 2
    )
