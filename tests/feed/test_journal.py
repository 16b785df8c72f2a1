"""The event journal: seqs, duplicates, retention, erasure, threads, a real kill -9 mid-append, and reviews.

Real SQLite files in tmp_path, real ZeroMQ sockets on 127.0.0.1 and a real child process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import make_event

from streamproc.errors import StreamprocError
from streamproc.feed.journal import JOURNAL_FORMAT, EventJournal, JournaledPublisher, JournalError
from streamproc.feed.publish import EventPublisher
from streamproc.feed.schema import MatchEvent, ReviewEvent
from streamproc.feed.subscribe import EventSubscriber

ANY_PORT = "tcp://127.0.0.1:*"
WARMUP = "warmup"


def test_append_stamps_consecutive_seqs_and_since_reads_in_order(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as journal:
        assert journal.last_seq() == 0
        assert journal.count() == 0
        assert list(journal.since(0)) == []
        stored = [journal.append(make_event(track=i)) for i in range(10)]
        assert [e.seq if e else None for e in stored] == list(range(1, 11))
        assert stored[0] == make_event(track=0).model_copy(update={"seq": 1})
        assert list(journal.since(0)) == stored
        assert [e.seq for e in journal.since(7)] == [8, 9, 10]
        assert [e.seq for e in journal.since(2, limit=3)] == [3, 4, 5]
        assert list(journal.since(10)) == []
        assert journal.last_seq() == 10
        assert journal.count() == 10
        assert journal.size_bytes() > 0


def test_since_reads_across_batches(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite", sync="normal") as journal:
        for i in range(1203):
            journal.append(make_event(track=i, face_jpeg_b64=None))
        assert [e.seq for e in journal.since(0)] == list(range(1, 1204))
        assert [e.seq for e in journal.since(100, limit=600)] == list(range(101, 701))


def test_duplicate_event_id_is_refused_even_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as journal:
        assert journal.append(make_event(track=1)) is not None
        assert journal.append(make_event(track=1)) is None
    with EventJournal(path) as journal:
        assert journal.append(make_event(track=1, distance=0.3, distances=[0.3])) is None  # same event_id
        assert journal.count() == 1
        second = journal.append(make_event(track=2))
        assert second is not None
        assert second.seq == 2


def test_seqs_are_never_reused_after_deletion_or_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as journal:
        for i in range(3):
            journal.append(make_event(track=i, subject=f"s-{i}"))
        assert journal.erase_subject("s-2") == 1  # the newest
        assert journal.last_seq() == 3
    with EventJournal(path) as journal:
        again = journal.append(make_event(track=9))
        assert again is not None
        assert again.seq == 4
        assert [e.seq for e in journal.since(0)] == [1, 2, 4]


def test_prune_by_count_keeps_the_newest(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as journal:
        for i in range(10):
            journal.append(make_event(track=i))
        assert journal.prune(max_age_s=None, max_events=4) == 6
        assert [e.seq for e in journal.since(0)] == [7, 8, 9, 10]
        assert journal.prune(max_age_s=None, max_events=4) == 0
        assert journal.prune(max_age_s=None, max_events=None) == 0
        assert journal.prune(max_age_s=None, max_events=0) == 4
        assert journal.count() == 0
        assert journal.last_seq() == 10


def test_prune_by_age_uses_published_at(tmp_path: Path) -> None:
    now = time.time()
    with EventJournal(tmp_path / "j.sqlite") as journal:
        journal.append(make_event(track=1, published_at=now - 3 * 86400))
        journal.append(make_event(track=2, published_at=now - 2 * 86400))
        journal.append(make_event(track=3, published_at=now - 60))
        assert journal.prune(max_age_s=86400, max_events=None) == 2
        assert [e.track_id for e in journal.since(0)] == [3]


def test_erase_subject_removes_every_event_and_its_bytes_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    marker = "Zyx Erasable Qwv"
    with EventJournal(path) as journal:
        for i in range(20):
            subject = "s-erase-me" if i % 2 else "s-keep"
            name = marker if i % 2 else "Kept Person"
            journal.append(make_event(track=i, subject=subject, subject_name=name))
        assert marker.encode() in path.read_bytes() + Path(f"{path}-wal").read_bytes()
        assert journal.erase_subject("s-erase-me") == 10
        assert journal.erase_subject("s-erase-me") == 0
        assert {e.subject_id for e in journal.since(0)} == {"s-keep"}
        assert journal.count() == 10
        wal = Path(f"{path}-wal")
        on_disk = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        assert marker.encode() not in on_disk  # secure_delete + WAL truncation: not just unlinked
        assert b"s-erase-me" not in on_disk


def test_concurrent_appends_from_threads_get_unique_seqs(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite", sync="normal") as journal:
        seqs: list[int] = []
        lock = threading.Lock()

        def work(worker: int) -> None:
            for i in range(50):
                stored = journal.append(make_event(stream=f"cam{worker}", track=i))
                assert stored is not None
                assert stored.seq is not None
                with lock:
                    seqs.append(stored.seq)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(seqs) == list(range(1, 201))
        assert [e.seq for e in journal.since(0)] == list(range(1, 201))


def test_bad_files_and_closed_journal_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError) as info:
        EventJournal(junk)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, StreamprocError)

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE x (y)")
    with pytest.raises(JournalError, match="format"):
        EventJournal(other)

    with pytest.raises(JournalError, match="sync"):
        EventJournal(tmp_path / "j.sqlite", sync="sometimes")  # type: ignore[arg-type]

    journal = EventJournal(tmp_path / "j.sqlite")
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.append(make_event())


def test_wal_mode_and_sync_setting(tmp_path: Path) -> None:
    for sync, level in (("full", 2), ("normal", 1)):
        with EventJournal(tmp_path / f"{sync}.sqlite", sync=sync) as journal:  # type: ignore[arg-type]
            journal.append(make_event())
            db = journal._db
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == level


# --------------------------------------------------------------------------------------- kill -9
CHILD = """
import sys
from pathlib import Path
from streamproc.feed.journal import EventJournal
from streamproc.feed.schema import MatchEvent
template = MatchEvent.model_validate_json(sys.stdin.buffer.read())
journal = EventJournal(Path(sys.argv[1]), sync="full")
i = 0
while True:
    stored = journal.append(template.model_copy(update={"track_id": i, "event_id": f"{i:032x}"}))
    print(stored.seq, flush=True)
    i += 1
"""


def test_kill_9_mid_append_leaves_no_torn_record_and_the_sequence_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        child.stdin.write(make_event().model_dump_json().encode())
        child.stdin.close()
        acknowledged = 0
        deadline = time.monotonic() + 60
        while acknowledged < 40:  # let it get well into its loop, then kill it wherever it is
            assert time.monotonic() < deadline, "child never appended"
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "child exited"
            acknowledged = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with EventJournal(path) as journal:
        last = journal.last_seq()
        assert last >= acknowledged  # every acknowledged append survived
        events = list(journal.since(0))  # every stored body decodes
        assert [e.seq for e in events] == list(range(1, last + 1))
        assert [e.track_id for e in events] == list(range(last))
        new = journal.append(make_event(track=10_000))
        assert new is not None
        assert new.seq == last + 1


# ----------------------------------------------------------------------------- JournaledPublisher
def test_journaled_publisher_stamps_publishes_and_drops_duplicates(tmp_path: Path) -> None:
    journal = EventJournal(tmp_path / "j.sqlite")
    with (
        JournaledPublisher(EventPublisher(ANY_PORT), journal) as pub,
        EventSubscriber(pub.endpoint) as sub,
    ):
        deadline = time.monotonic() + 15
        while sub.recv(timeout_s=0.05) is None:  # warm up on the raw publisher: not journaled
            assert time.monotonic() < deadline, "subscriber never connected"
            pub.publisher.publish(make_event(subject=WARMUP))

        def next_real() -> MatchEvent:
            end = time.monotonic() + 15
            while time.monotonic() < end:
                event = sub.recv(timeout_s=0.2)
                if event is not None and event.subject_id != WARMUP:
                    return event
            raise AssertionError("no event arrived")

        assert pub.publish(make_event(track=1)) is True
        assert pub.publish(make_event(track=1)) is False
        assert pub.publish(make_event(track=2)) is True
        first, second = next_real(), next_real()
        assert (first.track_id, first.seq) == (1, 1)
        assert (second.track_id, second.seq) == (2, 2)
        assert pub.duplicates == 1
        trailing = [sub.recv(timeout_s=0.3) for _ in range(3)]
        assert all(e is None or e.subject_id == WARMUP for e in trailing)  # the duplicate was never sent
        assert journal.count() == 2
    with pytest.raises(JournalError, match="closed"):
        journal.count()


# ------------------------------------------------------------------------------------------- reviews
def _review_for(event: MatchEvent | None, seq: int, reviewer: str = "alice", note: str = "same person") -> ReviewEvent:
    assert event is not None
    return ReviewEvent(
        review_id=f"{seq:032x}",
        seq=seq,
        event_id=event.event_id,
        stream_id=event.stream_id,
        subject_id=event.subject_id,
        decision="confirm",
        reviewer=reviewer,
        note=note,
        decided_at=1_800_000_100.0,
        status="pending",
        confirmations=(reviewer,),
        required_confirmations=2,
    )


def _store_review(journal: EventJournal, event_id: str, note: str = "same person") -> ReviewEvent:
    return journal.append_review(event_id, lambda e, _prior, seq: _review_for(e, seq, note=note), lambda _r: None)


def test_reviews_take_seqs_from_the_event_sequence_and_read_back_in_order(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as journal:
        first = journal.append(make_event(track=1))
        assert first is not None
        review = _store_review(journal, first.event_id)
        second = journal.append(make_event(track=2))
        assert (first.seq, review.seq, second and second.seq) == (1, 2, 3)
        assert list(journal.records_since(0)) == [first, review, second]
        assert list(journal.records_since(1, limit=1)) == [review]
        assert list(journal.since(0)) == [first, second]  # since() stays match events only
        assert [s for s, _ in journal.bodies_since(0, 10)] == [1, 2, 3]
        assert journal.reviews_of(first.event_id) == [review]
        assert journal.event(first.event_id) == first
        assert journal.event("0" * 32) is None
        assert (journal.count(), journal.review_count(), journal.last_seq()) == (2, 1, 3)


def test_a_refusing_builder_or_failing_callback_stores_nothing(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as journal:
        event = journal.append(make_event())
        assert event is not None

        def refuse(_e: MatchEvent | None, _prior: object, _seq: int) -> ReviewEvent:
            raise StreamprocError("refused")

        def fail(_r: ReviewEvent) -> None:
            raise OSError("audit log unwritable")

        with pytest.raises(StreamprocError, match="refused"):
            journal.append_review(event.event_id, refuse, lambda _r: None)
        with pytest.raises(OSError, match="unwritable"):
            journal.append_review(event.event_id, lambda e, _p, seq: _review_for(e, seq), fail)
        assert (journal.review_count(), journal.last_seq()) == (0, 1)
        assert _store_review(journal, event.event_id).seq == 2  # the seqs of failed attempts were not used


def test_reviews_go_with_their_events_on_erasure_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    marker = "Qzx reviewer note marker"
    with EventJournal(path) as journal:
        erased = journal.append(make_event(track=1, subject="s-erase-me"))
        old = journal.append(make_event(track=2, published_at=time.time() - 3 * 86400))
        kept = journal.append(make_event(track=3, published_at=time.time()))
        assert erased and old and kept
        for event in (erased, old, kept):
            _store_review(journal, event.event_id, note=marker)
        assert journal.erase_subject("s-erase-me") == 1
        assert journal.prune(max_age_s=86400, max_events=None) == 1
        assert [r.event_id for r in journal.reviews_after(0)] == [kept.event_id]
        wal = Path(f"{path}-wal")
        on_disk = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        assert on_disk.count(marker.encode()) <= 1  # only the kept review's note remains


def test_reviews_published_mark_only_moves_forward_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as journal:
        assert journal.reviews_published() == 0
        journal.set_reviews_published(5)
        journal.set_reviews_published(3)
        assert journal.reviews_published() == 5
    with EventJournal(path) as journal:
        assert journal.reviews_published() == 5


def test_a_format_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    event = make_event().model_copy(update={"seq": 1})
    with sqlite3.connect(path) as db:  # what format 1 wrote: no reviews table, a 1.0 body
        db.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE NOT NULL, stream_id TEXT, "
            "subject_id TEXT, published_at REAL, body BLOB NOT NULL)"
        )
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('last_seq', 1)")
        body = event.model_dump(mode="json", exclude={"template_label", "gallery_size"}) | {"schema_version": "1.0"}
        del body["calibration"]["fpir"]
        db.execute(
            "INSERT INTO events VALUES (1, ?, 'cam1', 's-001', 1.0, ?)", (event.event_id, json.dumps(body).encode())
        )
        db.execute("PRAGMA user_version=1")
    db.close()
    with EventJournal(path) as journal:
        assert journal._db.execute("PRAGMA user_version").fetchone()[0] == JOURNAL_FORMAT == 2
        (old,) = list(journal.since(0))
        assert old.schema_version == "1.0"
        assert old.template_label is None
        assert _store_review(journal, event.event_id).seq == 2
    future = tmp_path / "future.sqlite"
    with sqlite3.connect(future) as db:
        db.execute("CREATE TABLE x (y)")
        db.execute("PRAGMA user_version=3")
    db.close()
    with pytest.raises(JournalError, match="format 3 is not 2"):
        EventJournal(future)
