"""A durable local journal of match events, so a subscriber that was away can get every event it missed.

PUB/SUB is live and best-effort: events published while a subscriber is down, before its subscription
reaches the publisher, or beyond its high-water mark are gone. The journal closes that gap. Every event is
written to SQLite (WAL mode) in one transaction that also assigns it the next sequence number; only then is it
published, stamped with that ``seq``. A subscriber remembers the last seq it saw and asks the replay endpoint
(:mod:`streamproc.replay`) for everything after it.

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
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from pydantic import ValidationError

from streamproc.errors import StreamprocError
from streamproc.events import EventPublisher, MatchEvent

JOURNAL_FORMAT: Final = 1
"""``PRAGMA user_version`` of a journal file this code writes; another value is refused."""

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
)


class JournalError(StreamprocError):
    """The journal file cannot be opened or read (not a journal, corrupt, another format, closed)."""


class EventJournal:
    """Match events in a SQLite file (WAL mode), in the order they were appended, each with its ``seq``.

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
        if not fresh and version != JOURNAL_FORMAT:
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

    # ------------------------------------------------------------------------------------------ writing
    def append(self, event: MatchEvent) -> MatchEvent | None:
        """Store ``event`` with the next seq and return it stamped; None if its ``event_id`` is already here.

        The seq is assigned and the event stored in one transaction, so a crash leaves both or neither.
        """
        with self._lock:
            self._check_open()
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)).fetchone():
                        db.execute("ROLLBACK")
                        return None
                    seq = int(db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]) + 1
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
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise JournalError(f"cannot append to event journal {self.path}: {err}") from None
            return stamped

    # ------------------------------------------------------------------------------------------ reading
    def bodies_since(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored ``(seq, JSON body)`` pairs after ``seq``, in seq order (for the replay server)."""
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, max(0, limit))
                ).fetchall()
            except sqlite3.Error as err:
                raise JournalError(f"cannot read event journal {self.path}: {err}") from None
        return [(int(s), bytes(b)) for s, b in rows]

    def since(self, seq: int, limit: int | None = None) -> Iterator[MatchEvent]:
        """Events after ``seq`` in seq order, at most ``limit``; read in batches, without holding the lock."""
        remaining = limit
        after = seq
        while remaining is None or remaining > 0:
            batch = self.bodies_since(after, _BATCH if remaining is None else min(_BATCH, remaining))
            if not batch:
                return
            for stored_seq, body in batch:
                try:
                    event = MatchEvent.model_validate_json(body)
                except ValidationError:
                    raise JournalError(f"event journal {self.path}: record {stored_seq} does not decode") from None
                yield event
            after = batch[-1][0]
            if remaining is not None:
                remaining -= len(batch)

    def _scalar(self, sql: str) -> int:
        with self._lock:
            self._check_open()
            try:
                value = self._db.execute(sql).fetchone()[0]
            except sqlite3.Error as err:
                raise JournalError(f"cannot read event journal {self.path}: {err}") from None
        return int(value or 0)

    def last_seq(self) -> int:
        """The last seq ever assigned (0 for a new journal), even if that event has since been deleted."""
        return self._scalar("SELECT value FROM meta WHERE key = 'last_seq'")

    def count(self) -> int:
        """Number of events stored now."""
        return self._scalar("SELECT count(*) FROM events")

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
        with self._lock:
            self._check_open()
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    deleted = db.execute(sql, params).rowcount
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                if deleted:
                    # Give freed (already zeroed) pages back, and drop the WAL frames that still hold old copies.
                    db.execute("PRAGMA incremental_vacuum").fetchall()
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as err:
                raise JournalError(f"event journal {self.path}: deletion failed: {err}") from None
        return max(0, deleted)

    def prune(self, max_age_s: float | None, max_events: int | None) -> int:
        """Delete events published more than ``max_age_s`` ago, then the oldest beyond ``max_events``.

        Returns how many were deleted. ``None`` disables a limit. Age uses ``published_at`` (wall clock).
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

        Their seqs stay used; a replay simply no longer returns them. Returns how many were deleted.
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
