"""A durable local journal of match events, so a subscriber that was away can get every event it missed.

PUB/SUB is live and best-effort: events published while a subscriber is down, before its subscription
reaches the publisher, or beyond its high-water mark are gone. The journal closes that gap. Every event is
written to SQLite (WAL mode) in one transaction that also assigns it the next sequence number; only then is it
published, stamped with that ``seq``. A subscriber remembers the last seq it saw and asks the replay endpoint
(:mod:`streamproc.feed.replay`) for everything after it.

Guarantees:

- **No torn records.** An append is one SQLite transaction: a process killed mid-append leaves the journal as
  it was before, or with the whole event.
- **Seqs are never reused.** The last assigned seq lives in a ``meta`` row updated in the same transaction,
  so pruning or erasing the newest events does not hand their numbers out again.
- **No duplicates.** An event whose ``event_id`` is already journaled is refused, so a flag re-sent after a
  restart is neither stored nor published twice.
- **Erasure reaches the disk.** The journal holds face crops of matches; :meth:`EventJournal.erase_subject`
  and :meth:`EventJournal.prune` delete with ``secure_delete`` (freed pages are zeroed), then checkpoint and
  truncate the WAL and give freed pages back to the file system, so the deleted bytes do not linger.

Reviewers' decisions (:class:`~streamproc.feed.schema.ReviewEvent`, see :mod:`streamproc.govern.review`) live in a
second table but take their seq from the same counter, so a replay returns matches and decisions in the order they
were stored. They are written by another process (``streamproc review decide``) than the pipeline that owns the
PUB socket; the ``reviews_published`` high-water mark records how far the pipeline's feed has published them.
A review goes when its match event goes (retention, erasure): it names the subject and means nothing alone.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from pydantic import ValidationError

from streamproc.errors import StreamprocError
from streamproc.feed.publish import EventPublisher
from streamproc.feed.schema import FeedEvent, MatchEvent, ReviewEvent

JOURNAL_FORMAT: Final = 2
"""``PRAGMA user_version`` of a journal file this code writes (2: with reviews); another value is refused."""

_UPGRADABLE: Final = (1,)
"""Older formats opened by adding what they lack (format 1 had no reviews); older code then refuses the file."""

_BATCH: Final = 500

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT UNIQUE NOT NULL,
        stream_id TEXT,
        subject_id TEXT,
        published_at REAL,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_subject ON events(subject_id)",
    "CREATE INDEX IF NOT EXISTS events_published_at ON events(published_at)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', 0)",
    """CREATE TABLE IF NOT EXISTS reviews (
        seq INTEGER PRIMARY KEY,
        review_id TEXT UNIQUE NOT NULL,
        event_id TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        subject_id TEXT,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS reviews_event ON reviews(event_id)",
    "CREATE INDEX IF NOT EXISTS reviews_subject ON reviews(subject_id)",
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('reviews_published', 0)",
)

_ORPHAN_REVIEWS: Final = "DELETE FROM reviews WHERE event_id NOT IN (SELECT event_id FROM events)"

ReviewBuilder = Callable[[MatchEvent | None, Sequence[ReviewEvent], int], ReviewEvent]
"""Given the match event (None if not journaled), its earlier reviews and the next seq: the review to store.

It may raise to refuse; nothing is stored then."""


class JournalError(StreamprocError):
    """The journal file cannot be opened or read (not a journal, corrupt, another format, closed)."""


class EventJournal:
    """Match events and reviews in a SQLite file (WAL mode), in the order they were appended, each with its ``seq``.

    ``sync`` trades durability for speed: ``"full"`` (``PRAGMA synchronous=FULL``) fsyncs the WAL at every
    append, so an event is on disk before it is published and survives a power loss or OS crash; ``"normal"``
    skips that fsync: an append survives the process being killed, but the last appends before a power loss
    may be lost (never corrupted). Losing them also loses their seqs, which are then handed out again to
    different events, so subscribers should treat a seq reused after a host crash as possible under "normal".

    Thread-safe: one connection guarded by a lock.
    """

    def __init__(self, path: Path, sync: Literal["full", "normal"] = "full") -> None:
        if sync not in ("full", "normal"):
            raise JournalError(f"journal sync must be 'full' or 'normal', not {sync!r}")
        self.path = Path(path)
        self.sync = sync
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except (OSError, sqlite3.Error) as err:
            raise JournalError(f"cannot open event journal {self.path}: {err}") from None
        try:
            self._setup()
        except sqlite3.Error as err:
            self._db.close()
            self._closed = True
            raise JournalError(f"cannot open event journal {self.path}: {err}") from None

    def _setup(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if not fresh and version != JOURNAL_FORMAT and version not in _UPGRADABLE:
            raise sqlite3.DatabaseError(f"journal format {version} is not {JOURNAL_FORMAT}")
        if fresh:
            # Only settable before the first table exists; lets retention give freed pages back to the disk.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'full' else 'NORMAL'}")
        db.execute("PRAGMA secure_delete=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={JOURNAL_FORMAT}")
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError(f"event journal {self.path} is closed")

    @contextlib.contextmanager
    def _errors(self, message: str) -> Iterator[None]:
        """SQLite failures as one-line :class:`JournalError` (``message`` has ``{path}`` and ``{err}``)."""
        try:
            yield
        except sqlite3.Error as err:
            raise JournalError(message.format(path=self.path, err=err)) from None

    @contextlib.contextmanager
    def _write(self, message: str) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed when the block ends, rolled back if it raises.

        ``BEGIN IMMEDIATE`` takes SQLite's write lock at once, so what the block reads (the last seq, an
        event's reviews) cannot change before it writes, also across processes.
        """
        with self._lock, self._errors(message):
            self._check_open()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _next_seq(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]) + 1

    # ------------------------------------------------------------------------------------------ writing
    def append(self, event: MatchEvent) -> MatchEvent | None:
        """Store ``event`` with the next seq and return it stamped; None if its ``event_id`` is already here.

        The seq is assigned and the event stored in one transaction, so a crash leaves both or neither.
        """
        with self._write("cannot append to event journal {path}: {err}") as db:
            if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)).fetchone():
                return None
            seq = self._next_seq(db)
            stamped = event.model_copy(update={"seq": seq})
            db.execute(
                "INSERT INTO events(seq, event_id, stream_id, subject_id, published_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    stamped.event_id,
                    stamped.stream_id,
                    stamped.subject_id,
                    stamped.published_at,
                    stamped.model_dump_json().encode("utf-8"),
                ),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
        return stamped

    def append_review(
        self, event_id: str, build: ReviewBuilder, on_stored: Callable[[ReviewEvent], None]
    ) -> ReviewEvent:
        """Store the review ``build`` makes for ``event_id`` with the next seq, then call ``on_stored`` (e.g. audit).

        One write transaction covers reading the event and its reviews, ``build`` (which applies the rules and may
        raise to refuse), the insert and ``on_stored``: decisions by concurrent reviewers are serialised, and an
        exception from either callback rolls everything back. ``on_stored`` runs while the write lock is held, so
        records it writes elsewhere come in the journal's order.
        """
        with self._write("cannot store a review in event journal {path}: {err}") as db:
            row = db.execute("SELECT seq, body FROM events WHERE event_id = ?", (event_id,)).fetchone()
            event = self._match(int(row[0]), bytes(row[1])) if row else None
            prior = [
                self._review(int(s), bytes(b))
                for s, b in db.execute(
                    "SELECT seq, body FROM reviews WHERE event_id = ? ORDER BY seq", (event_id,)
                ).fetchall()
            ]
            seq = self._next_seq(db)
            review = build(event, prior, seq)
            if review.seq != seq or review.event_id != event_id:
                raise ValueError(f"review builder returned seq {review.seq} for {review.event_id}")
            db.execute(
                "INSERT INTO reviews(seq, review_id, event_id, reviewer, subject_id, body) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    review.review_id,
                    review.event_id,
                    review.reviewer,
                    review.subject_id,
                    review.model_dump_json().encode("utf-8"),
                ),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
            on_stored(review)
        return review

    # ------------------------------------------------------------------------------------------ reading
    def _match(self, seq: int, body: bytes) -> MatchEvent:
        try:
            return MatchEvent.model_validate_json(body)
        except ValidationError:
            raise JournalError(f"event journal {self.path}: record {seq} does not decode") from None

    def _review(self, seq: int, body: bytes) -> ReviewEvent:
        try:
            return ReviewEvent.model_validate_json(body)
        except ValidationError:
            raise JournalError(f"event journal {self.path}: review record {seq} does not decode") from None

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[tuple[int, bytes]]:
        with self._lock, self._errors("cannot read event journal {path}: {err}"):
            self._check_open()
            rows = self._db.execute(sql, params).fetchall()
        return [(int(s), bytes(b)) for s, b in rows]

    def bodies_since(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored ``(seq, JSON body)`` pairs after ``seq``, matches and reviews in seq order.

        For the replay server, which sends the bodies as stored.
        """
        # Two primary-key range scans merged here (a UNION ... ORDER BY would sort every later body, face crops
        # included), in one read transaction: one snapshot, so an append by another process between the two
        # scans cannot leave a hole below the last seq returned.
        limit = max(0, limit)
        with self._lock:
            self._check_open()
            db = self._db
            try:
                db.execute("BEGIN")
                try:
                    rows = [
                        *db.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)),
                        *db.execute("SELECT seq, body FROM reviews WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)),
                    ]
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as err:
                raise JournalError(f"cannot read event journal {self.path}: {err}") from None
        rows.sort(key=lambda row: int(row[0]))
        return [(int(s), bytes(b)) for s, b in rows[:limit]]

    def records_since(self, seq: int, limit: int | None = None) -> Iterator[FeedEvent]:
        """Match events and reviews after ``seq`` in seq order, at most ``limit`` (as a replay returns them)."""
        remaining = limit
        after = seq
        while remaining is None or remaining > 0:
            batch = self.bodies_since(after, _BATCH if remaining is None else min(_BATCH, remaining))
            if not batch:
                return
            for stored_seq, body in batch:
                if b'"type":"review"' in body:  # model_dump_json writes it so, and a match body cannot contain it
                    yield self._review(stored_seq, body)
                else:
                    yield self._match(stored_seq, body)
            after = batch[-1][0]
            if remaining is not None:
                remaining -= len(batch)

    def event(self, event_id: str) -> MatchEvent | None:
        """The journaled match event ``event_id``, or None when it is not (or no longer) here."""
        rows = self._rows("SELECT seq, body FROM events WHERE event_id = ?", (event_id,))
        return self._match(*rows[0]) if rows else None

    def reviews_of(self, event_id: str) -> list[ReviewEvent]:
        """The decisions stored on ``event_id``, in seq order."""
        rows = self._rows("SELECT seq, body FROM reviews WHERE event_id = ? ORDER BY seq", (event_id,))
        return [self._review(s, b) for s, b in rows]

    def reviews_after(self, seq: int, limit: int = _BATCH) -> list[ReviewEvent]:
        """Up to ``limit`` stored decisions with a seq above ``seq``, in seq order."""
        rows = self._rows("SELECT seq, body FROM reviews WHERE seq > ? ORDER BY seq LIMIT ?", (seq, max(0, limit)))
        return [self._review(s, b) for s, b in rows]

    def reviews_published(self) -> int:
        """The feed's high-water mark: decisions up to this seq have been handed to its PUB socket."""
        return self._scalar("SELECT value FROM meta WHERE key = 'reviews_published'")

    def set_reviews_published(self, seq: int) -> None:
        """Advance the high-water mark to ``seq`` (never moves it back)."""
        with self._lock, self._errors("cannot update event journal {path}: {err}"):
            self._check_open()
            self._db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'reviews_published'", (int(seq),))

    def since(self, seq: int, limit: int | None = None) -> Iterator[MatchEvent]:
        """Match events after ``seq`` in seq order, at most ``limit``; read in batches, without holding the lock."""
        remaining = limit
        after = seq
        while remaining is None or remaining > 0:
            batch = self._rows(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, _BATCH if remaining is None else min(_BATCH, remaining)),
            )
            if not batch:
                return
            for stored_seq, body in batch:
                yield self._match(stored_seq, body)
            after = batch[-1][0]
            if remaining is not None:
                remaining -= len(batch)

    def _scalar(self, sql: str) -> int:
        with self._lock, self._errors("cannot read event journal {path}: {err}"):
            self._check_open()
            value = self._db.execute(sql).fetchone()[0]
        return int(value or 0)

    def last_seq(self) -> int:
        """The last seq ever assigned (0 for a new journal), even if that event has since been deleted."""
        return self._scalar("SELECT value FROM meta WHERE key = 'last_seq'")

    def count(self) -> int:
        """Number of match events stored now."""
        return self._scalar("SELECT count(*) FROM events")

    def review_count(self) -> int:
        """Number of decisions stored now."""
        return self._scalar("SELECT count(*) FROM reviews")

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL (what retention has to keep bounded)."""
        total = 0
        for suffix in ("", "-wal"):
            part = self.path.with_name(self.path.name + suffix)
            try:
                total += part.stat().st_size
            except FileNotFoundError:
                continue
        return total

    # ---------------------------------------------------------------------------------------- retention
    def _delete(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one event deletion and drop the reviews it orphans, in one transaction; events deleted."""
        failed = "event journal {path}: deletion failed: {err}"
        with self._write(failed) as db:
            deleted = db.execute(sql, params).rowcount
            deleted_reviews = db.execute(_ORPHAN_REVIEWS).rowcount
        if deleted or deleted_reviews:
            with self._lock, self._errors(failed):
                self._check_open()
                # Give freed (already zeroed) pages back, and drop the WAL frames that still hold old copies.
                self._db.execute("PRAGMA incremental_vacuum").fetchall()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return max(0, deleted)

    def prune(self, max_age_s: float | None, max_events: int | None) -> int:
        """Delete events published more than ``max_age_s`` ago, then the oldest beyond ``max_events``.

        Returns how many events were deleted (their reviews go with them). ``None`` disables a limit. Age uses
        ``published_at`` (wall clock).
        """
        deleted = 0
        if max_age_s is not None:
            cutoff = time.time() - max_age_s
            deleted += self._delete("DELETE FROM events WHERE published_at < ?", (cutoff,))
        if max_events is not None:
            deleted += self._delete(
                "DELETE FROM events WHERE seq <= (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (max(0, max_events),),
            )
        return deleted

    def erase_subject(self, subject_id: str) -> int:
        """Delete every journaled event of ``subject_id`` (erasure must reach the journal: it holds face crops).

        Their reviews go too. Their seqs stay used; a replay simply no longer returns them. Returns how many
        events were deleted.
        """
        return self._delete("DELETE FROM events WHERE subject_id = ?", (subject_id,))

    # --------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the connection (idempotent); SQLite checkpoints the WAL into the database file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class JournaledPublisher:
    """Journal first, then publish: an event is on disk (per the journal's ``sync``) before anyone can see it.

    The lock keeps seq order equal to publication order and serialises the (not thread-safe) PUB socket.
    Owns neither the publisher nor the journal unless ``owns=True``, in which case :meth:`close` closes both.
    """

    def __init__(self, publisher: EventPublisher, journal: EventJournal, owns: bool = True) -> None:
        self.publisher = publisher
        self.journal = journal
        self._owns = owns
        self._lock = threading.Lock()
        self.duplicates = 0
        """Events refused because their ``event_id`` was already journaled."""

    @property
    def endpoint(self) -> str:
        """The PUB socket's bound endpoint."""
        return self.publisher.endpoint

    def publish(self, event: MatchEvent) -> bool:
        """Journal and publish ``event`` stamped with its seq; False (nothing sent) for a duplicate event_id."""
        with self._lock:
            stamped = self.journal.append(event)
            if stamped is None:
                self.duplicates += 1
                return False
            self.publisher.publish(stamped)
            return True

    def close(self) -> None:
        """Close the publisher and the journal when owned (idempotent)."""
        if self._owns:
            self.publisher.close()
            self.journal.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["JOURNAL_FORMAT", "EventJournal", "JournalError", "JournaledPublisher"]
