"""The watchlist store: SQLite metadata + an HNSW index file + an integrity manifest.

Directory layout::

    watchlist.sqlite        subjects, templates (with their vectors), meta, audit
    index.hnsw              HnswIndex file; its sha256 is meta.index_sha256
    index.hnsw.pending      only between a commit and its rename (see below)
    watchlist.lock          flock()ed by the single writer

Why the vectors are also in SQLite: the index can then be rebuilt (compact) and
checked (verify) from the database alone. They are enrolled-subject data only;
removal erases a subject's vectors from the database (``vector`` set to NULL,
``secure_delete`` on) and marks them deleted in the index, and :meth:`Watchlist.compact`
drops them from the index file too.

Update protocol (enrol, remove, compact) and its crash ordering:

1. ``BEGIN IMMEDIATE``; write rows; build the new index on a *copy* of the
   in-memory index (the live one is untouched if anything fails);
2. save the new index to ``index.hnsw.pending`` (tmp + fsync + rename);
3. record its sha256 in ``meta.index_sha256`` and ``COMMIT`` (``synchronous=FULL``,
   so the commit is durable before step 4);
4. rename ``index.hnsw.pending`` -> ``index.hnsw`` and fsync the directory.

* crash before 3: the WAL rolls the rows back; ``index.hnsw`` is untouched; a stale
  pending file whose hash is not recorded is deleted by the next writable open.
* crash between 3 and 4: ``meta`` names the pending file's hash; the next open
  finds ``index.hnsw`` mismatching but the pending file matching and finishes
  the rename (read-only opens just load the pending file).
* any other mismatch is corruption -> :class:`WatchlistError`.

Concurrency: one writer process at a time (``watchlist.lock``, non-blocking: a
second writer gets a clear error). Readers in other processes get a consistent
snapshot: meta, the label map and the index are read under one SQLite read
transaction, and a reader that races a writer's rename retries with a fresh
snapshot. :meth:`Watchlist.index_version` is a cheap poll for hot reload.
Within a process, a Watchlist object may be shared between threads (an RLock
serialises its methods).

Vectors are ``(dim,)`` / ``(Q, dim)`` float32; for the cosine metric they must be
L2-normalised (checked at enrolment). Timestamps are aware UTC datetimes, stored
as ISO-8601 text.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamproc.errors import EnrolmentError, WatchlistError
from streamproc.search.index import (
    HnswIndex,
    IndexChecksumError,
    IndexParams,
    fsync_dir,
    normalise,
    sha256_file,
    tune_ef,
)
from streamproc.types import EmbedderIdentity, Metric

_log = logging.getLogger(__name__)

DB_FILE: Final = "watchlist.sqlite"
INDEX_FILE: Final = "index.hnsw"
PENDING_FILE: Final = "index.hnsw.pending"
LOCK_FILE: Final = "watchlist.lock"
SCHEMA_VERSION: Final = "1"

_META_KEYS: Final = (
    "schema_version",
    "embedder_kind",
    "model_sha256",
    "dim",
    "metric",
    "index_sha256",
    "ef_search",
    "next_label",
)
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_UNIT_NORM_TOL: Final = 1e-2
_TUNE_SAMPLE: Final = 1000  # near + random: up to 2000 tuning queries
_TUNE_SEED: Final = 20240601
_SNAPSHOT_RETRIES: Final = 5
_VERIFY_VECTOR_TOL: Final = 1e-4
_VERIFY_DIST_TOL: Final = 1e-3

_SCHEMA: Final = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE subjects(
    subject_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    legal_basis TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at TEXT NOT NULL,
    expires_at TEXT NULL,
    removed_at TEXT NULL
);
CREATE TABLE templates(
    label INTEGER PRIMARY KEY,
    subject_id TEXT NOT NULL REFERENCES subjects(subject_id),
    source_sha256 TEXT NOT NULL,
    quality REAL NOT NULL,
    created_at TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    vector BLOB NULL
);
CREATE INDEX templates_subject ON templates(subject_id);
CREATE TABLE audit(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_id TEXT NULL,
    detail TEXT NOT NULL
);
"""


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class NewSubject:
    """Metadata supplied at enrolment (``added_at`` is set by the watchlist)."""

    subject_id: str
    display_name: str
    reason: str
    legal_basis: str
    added_by: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class NewTemplate:
    """One ``(dim,)`` float32 embedding and the sha256 of the image it came from."""

    vector: NDArray[np.float32]
    source_sha256: str
    quality: float


@dataclass(frozen=True)
class Subject:
    """An enrolled subject; ``n_templates`` counts live templates."""

    subject_id: str
    display_name: str
    reason: str
    legal_basis: str
    added_by: str
    added_at: datetime
    expires_at: datetime | None
    n_templates: int
    removed_at: datetime | None = None


@dataclass(frozen=True)
class Candidate:
    """A search hit: the subject's best template and its distance (metric's natural unit)."""

    subject_id: str
    display_name: str
    label: int
    distance: float


@dataclass(frozen=True)
class _Target:
    """What search needs about a non-removed subject."""

    display_name: str
    expires_at: datetime | None


@dataclass(frozen=True)
class _Snapshot:
    """In-memory state read under one transaction: index + label -> subject map."""

    index_sha256: str
    index: HnswIndex
    label_subject: Mapping[int, str]
    targets: Mapping[str, _Target]


# ---------------------------------------------------------------------- store
class Watchlist:
    """A watchlist directory opened for searching (and, if writable, for changes)."""

    def __init__(
        self,
        directory: Path,
        conn: sqlite3.Connection,
        embedder: EmbedderIdentity,
        snapshot: _Snapshot,
        lock_file: IO[bytes] | None,
    ) -> None:
        """Internal; use :meth:`create`, :meth:`open` or :meth:`open_or_create`."""
        self._dir = directory
        self._conn = conn
        self._embedder = embedder
        self._snap = snapshot
        self._lock_file = lock_file
        self._mutex = threading.RLock()
        self._closed = False

    # ---------------------------------------------------------- open / create
    @classmethod
    def create(cls, directory: Path, embedder: EmbedderIdentity) -> Watchlist:
        """Create an empty watchlist (writable). Refuses an existing non-empty directory.

        Built in a sibling staging directory and renamed into place, so a crash
        never leaves a half-made watchlist at ``directory``.
        """
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise WatchlistError(f"watchlist {directory} already exists; open it, or choose a new directory")
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            staging = directory.parent / f".{directory.name}.creating-{secrets.token_hex(4)}"
            staging.mkdir()
        except OSError as exc:
            raise WatchlistError(
                f"watchlist {directory}: cannot create ({exc.strerror or exc}); check the path and permissions"
            ) from exc
        try:
            params = IndexParams(dim=embedder.dim, metric=embedder.metric)
            index_sha = HnswIndex(params).save(staging / INDEX_FILE)
            conn = _connect(staging / DB_FILE, writable=True)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                _exec_script(conn, _SCHEMA)
                meta = {
                    "schema_version": SCHEMA_VERSION,
                    "embedder_kind": embedder.kind,
                    "model_sha256": embedder.model_sha256,
                    "dim": str(embedder.dim),
                    "metric": embedder.metric,
                    "index_sha256": index_sha,
                    "ef_search": str(params.ef_search),
                    "next_label": "0",
                }
                conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
                _audit(
                    conn,
                    _utc_now(None),
                    "system",
                    "create",
                    subject_id=None,
                    detail=f"embedder {embedder.kind} {embedder.model_sha256[:12]} dim={embedder.dim} "
                    f"metric={embedder.metric}",
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
            staging.replace(directory)
            fsync_dir(directory.parent)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError | sqlite3.Error):
                raise WatchlistError(
                    f"watchlist {directory}: cannot create ({exc}); check the path, free space and permissions"
                ) from exc
            raise
        _log.info("created watchlist %s (%s, dim=%d, %s)", directory, embedder.kind, embedder.dim, embedder.metric)
        return cls.open(directory, embedder, writable=True)

    @classmethod
    def open(cls, directory: Path, embedder: EmbedderIdentity | None = None, *, writable: bool = False) -> Watchlist:
        """Open and verify: files present, schema version, index checksum, embedder match.

        ``writable=True`` takes the single-writer lock and finishes an update
        interrupted between commit and rename (see module docstring).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise WatchlistError(f"watchlist {directory} does not exist; create it or enrol a subject first")
        if not (directory / DB_FILE).is_file():
            raise WatchlistError(
                f"watchlist {directory}: {DB_FILE} is missing; not a watchlist directory, "
                "or damaged: restore from backup"
            )
        with contextlib.ExitStack() as stack:
            lock_file = _take_writer_lock(directory) if writable else None
            if lock_file is not None:
                stack.callback(lock_file.close)
            try:
                conn = _connect(directory / DB_FILE, writable=writable)
                stack.callback(conn.close)
                if writable:
                    conn.execute("PRAGMA journal_mode=WAL")
                meta = _read_meta(conn, directory)
            except sqlite3.Error as exc:
                raise WatchlistError(
                    f"watchlist {directory}: database unreadable ({exc}); restore from backup"
                ) from exc
            stored = _identity_from_meta(meta, directory)
            if embedder is not None:
                _check_embedder(directory, stored, embedder)
            snapshot = _read_snapshot(conn, directory, stored, repair=writable)
            if writable:
                _remove_stale_temporaries(directory)
            stack.pop_all()
        return cls(directory, conn, stored, snapshot, lock_file)

    @classmethod
    def open_or_create(cls, directory: Path, embedder: EmbedderIdentity) -> Watchlist:
        """Open writable if ``directory`` holds a watchlist, else create it."""
        directory = Path(directory)
        if (directory / DB_FILE).exists():
            return cls.open(directory, embedder, writable=True)
        return cls.create(directory, embedder)

    # ---------------------------------------------------------- properties
    @property
    def embedder(self) -> EmbedderIdentity:
        """The identity of the model the templates were made with."""
        return self._embedder

    @property
    def directory(self) -> Path:
        """The watchlist directory."""
        return self._dir

    @property
    def writable(self) -> bool:
        """Whether this object holds the writer lock."""
        return self._lock_file is not None

    def index_version(self) -> str:
        """The committed ``meta.index_sha256``: changes on every enrol/remove/compact.

        A running pipeline polls this (one indexed SELECT) and reopens on change.
        """
        with self._mutex:
            self._check_open()
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'index_sha256'").fetchone()
        if row is None:
            raise WatchlistError(f"watchlist {self._dir}: meta.index_sha256 is missing; restore from backup")
        return str(row[0])

    def __len__(self) -> int:
        """Active subjects: not removed and not expired now."""
        now = _utc_now(None)
        with self._mutex:
            return sum(1 for t in self._snap.targets.values() if _is_live(t.expires_at, now))

    # ---------------------------------------------------------- queries
    def subjects(self, include_removed: bool = False) -> list[Subject]:
        """All non-removed subjects (expired included), oldest first."""
        sql = (
            "SELECT s.subject_id, s.display_name, s.reason, s.legal_basis, s.added_by, s.added_at, "
            "s.expires_at, s.removed_at, (SELECT COUNT(*) FROM templates t "
            "WHERE t.subject_id = s.subject_id AND t.deleted = 0) FROM subjects s"
        )
        if not include_removed:
            sql += " WHERE s.removed_at IS NULL"
        with self._mutex:
            self._check_open()
            rows = self._conn.execute(sql + " ORDER BY s.added_at, s.subject_id").fetchall()
        return [_subject_from_row(r) for r in rows]

    def expired(self, now: datetime) -> list[Subject]:
        """Non-removed subjects with ``expires_at <= now`` (candidates for :meth:`remove`)."""
        now = _utc_now(now)
        return [s for s in self.subjects() if s.expires_at is not None and s.expires_at <= now]

    def search(self, queries: ArrayLike, k: int = 5, now: datetime | None = None) -> list[list[Candidate]]:
        """Up to ``k`` distinct active subjects per ``(Q, dim)`` float32 query, best first.

        Each subject appears once, at its best template's distance. Removed and
        expired (``expires_at <= now``) subjects are skipped; the index is
        over-fetched until ``k`` subjects are found or it is exhausted.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        now = _utc_now(now)
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self._embedder.dim:
            raise ValueError(f"queries must have shape (Q, {self._embedder.dim}), got {q.shape}")
        with self._mutex:
            self._check_open()
            snap = self._snap
            live = len(snap.index)
            results: list[list[Candidate]] = [[] for _ in range(q.shape[0])]
            if live == 0 or q.shape[0] == 0:
                return results
            fetch = min(live, max(4 * k, 16))
            while True:
                labels, dists = snap.index.search(q, fetch)
                short = False
                for row in range(q.shape[0]):
                    results[row] = _collapse(labels[row], dists[row], k, snap, now)
                    short = short or len(results[row]) < k
                if not short or fetch >= live:
                    return results
                fetch = min(live, fetch * 4)

    # ---------------------------------------------------------- changes
    def enroll(
        self,
        subject: NewSubject,
        templates: Sequence[NewTemplate],
        *,
        add_to_existing: bool = False,
        now: datetime | None = None,
    ) -> Subject:
        """Enrol a subject with its templates, all-or-nothing.

        An existing subject_id is refused unless ``add_to_existing=True``, which
        adds templates to that active subject (its stored metadata is kept).
        Bad input raises :class:`EnrolmentError` before anything is written.
        """
        now = _utc_now(now)
        _check_subject(subject, now)
        vectors = _check_templates(templates, self._embedder)
        with self._mutex:
            self._require_writable()

            def change(conn: sqlite3.Connection, index: HnswIndex) -> HnswIndex:
                row = conn.execute(
                    "SELECT removed_at FROM subjects WHERE subject_id = ?", (subject.subject_id,)
                ).fetchone()
                if row is not None and row[0] is not None:
                    raise WatchlistError(
                        f"subject {subject.subject_id} was removed at {row[0]}; enrol under a new subject_id"
                    )
                if row is not None and not add_to_existing:
                    raise WatchlistError(
                        f"subject {subject.subject_id} already enrolled; use "
                        "--add-templates (add_to_existing=True) to add templates to it"
                    )
                if row is None and add_to_existing:
                    raise WatchlistError(f"subject {subject.subject_id} is not enrolled; enrol it first")
                if row is None:
                    conn.execute(
                        "INSERT INTO subjects(subject_id, display_name, reason, legal_basis, added_by, "
                        "added_at, expires_at, removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                        (
                            subject.subject_id,
                            subject.display_name,
                            subject.reason,
                            subject.legal_basis,
                            subject.added_by,
                            _iso(now),
                            _iso_opt(subject.expires_at),
                        ),
                    )
                first = int(_meta_value(conn, "next_label"))
                labels = np.arange(first, first + len(templates), dtype=np.int64)
                conn.executemany(
                    "INSERT INTO templates(label, subject_id, source_sha256, quality, created_at, deleted, "
                    "vector) VALUES (?, ?, ?, ?, ?, 0, ?)",
                    [
                        (int(lab), subject.subject_id, t.source_sha256, float(t.quality), _iso(now), _to_blob(vec))
                        for lab, t, vec in zip(labels, templates, vectors, strict=True)
                    ],
                )
                _set_meta(conn, "next_label", str(first + len(templates)))
                action = "add_templates" if row is not None else "enroll"
                _audit(
                    conn,
                    now,
                    subject.added_by,
                    action,
                    subject_id=subject.subject_id,
                    detail=f"{len(templates)} template(s), labels {first}..{first + len(templates) - 1}; "
                    f"reason: {subject.reason}; legal basis: {subject.legal_basis}",
                )
                new_index = index.copy()
                new_index.add(vectors, labels)
                return new_index

            self._update(change, retune=True)
            return self._subject(subject.subject_id)

    def remove(self, subject_id: str, removed_by: str, reason: str, *, now: datetime | None = None) -> None:
        """Remove a subject: stamp ``removed_at``, delete and erase its templates, audit who/why."""
        now = _utc_now(now)
        if not removed_by.strip() or not reason.strip():
            raise WatchlistError("removal needs removed_by and reason (recorded in the audit log)")
        with self._mutex:
            self._require_writable()

            def change(conn: sqlite3.Connection, index: HnswIndex) -> HnswIndex:
                row = conn.execute("SELECT removed_at FROM subjects WHERE subject_id = ?", (subject_id,)).fetchone()
                if row is None:
                    raise WatchlistError(
                        f"watchlist {self._dir}: unknown subject {subject_id}; list subjects to check the id"
                    )
                if row[0] is not None:
                    raise WatchlistError(f"subject {subject_id} was already removed at {row[0]}")
                labels = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT label FROM templates WHERE subject_id = ? AND deleted = 0", (subject_id,)
                    )
                ]
                conn.execute("UPDATE subjects SET removed_at = ? WHERE subject_id = ?", (_iso(now), subject_id))
                conn.execute("UPDATE templates SET deleted = 1, vector = NULL WHERE subject_id = ?", (subject_id,))
                _audit(
                    conn,
                    now,
                    removed_by,
                    "remove",
                    subject_id=subject_id,
                    detail=f"{len(labels)} template(s); reason: {reason}",
                )
                new_index = index.copy()
                for label in labels:
                    try:
                        new_index.mark_deleted(label)
                    except KeyError:
                        _log.warning(
                            "watchlist %s: template %d of %s was not live in the index", self._dir, label, subject_id
                        )
                return new_index

            self._update(change, retune=False)

    def compact(self) -> None:
        """Rebuild the index from the live templates in the database, retune ef, save atomically."""
        with self._mutex:
            self._require_writable()

            def change(conn: sqlite3.Connection, index: HnswIndex) -> HnswIndex:
                labels, vectors = _live_vectors(conn, self._embedder.dim, self._dir)
                fresh = HnswIndex(index.params, capacity=max(1024, labels.size))
                fresh.add(vectors, labels)
                _audit(
                    conn,
                    _utc_now(None),
                    "system",
                    "compact",
                    subject_id=None,
                    detail=f"{labels.size} live template(s); {len(index)} live / {index.capacity} slots before",
                )
                return fresh

            self._update(change, retune=True)

    # ---------------------------------------------------------- integrity
    def verify(self) -> list[str]:
        """Cross-check database, index file and in-memory index; return problems (empty = OK)."""
        problems: list[str] = []
        with self._mutex:
            self._check_open()
            conn = self._conn
            index = self._snap.index
            conn.execute("BEGIN")
            try:
                integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
                if integrity != ["ok"]:
                    problems.append(f"database integrity check: {'; '.join(integrity[:3])}")
                if conn.execute("PRAGMA foreign_key_check").fetchall():
                    problems.append("database has templates whose subject does not exist")
                recorded = _meta_value(conn, "index_sha256")
                db_live = {
                    int(r[0]): r[1] for r in conn.execute("SELECT label, vector FROM templates WHERE deleted = 0")
                }
                empty = [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT s.subject_id FROM subjects s WHERE s.removed_at IS NULL AND NOT EXISTS "
                        "(SELECT 1 FROM templates t WHERE t.subject_id = s.subject_id AND t.deleted = 0)"
                    )
                ]
                orphans = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT t.label FROM templates t JOIN subjects s USING(subject_id) "
                        "WHERE s.removed_at IS NOT NULL AND t.deleted = 0"
                    )
                ]
            finally:
                conn.execute("COMMIT")
        problems += _check_index_file(self._dir, recorded, self._snap.index_sha256)
        problems += _compare_templates(index, db_live, self._embedder)
        problems += [f"subject {s} has no live templates" for s in empty]
        problems += [f"template {lab} belongs to a removed subject but is still live" for lab in orphans]
        return problems

    # ---------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the database and release the writer lock (idempotent)."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            if self._lock_file is not None:
                self._lock_file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise WatchlistError(f"watchlist {self._dir} is closed")

    def _require_writable(self) -> None:
        self._check_open()
        if self._lock_file is None:
            raise WatchlistError(f"watchlist {self._dir} is open read-only; open it with writable=True to change it")

    def _subject(self, subject_id: str) -> Subject:
        for s in self.subjects(include_removed=True):
            if s.subject_id == subject_id:
                return s
        raise WatchlistError(f"watchlist {self._dir}: unknown subject {subject_id}")

    def _update(self, change: Callable[[sqlite3.Connection, HnswIndex], HnswIndex], *, retune: bool) -> None:
        """Run ``change`` under the update protocol in the module docstring.

        ``change`` writes rows inside the open transaction and returns the new
        index (a copy; ``self._snap.index`` stays valid if anything fails).
        """
        conn = self._conn
        pending = self._dir / PENDING_FILE
        conn.execute("BEGIN IMMEDIATE")
        try:
            new_index = change(conn, self._snap.index)
            if retune:
                new_index.ef_search = _tune(new_index, conn, self._embedder, self._dir)
            new_sha = new_index.save(pending)
            _set_meta(conn, "index_sha256", new_sha)
            _set_meta(conn, "ef_search", str(new_index.ef_search))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
                pending.unlink(missing_ok=True)
            # else COMMIT itself failed and its outcome is unknown: keep the pending
            # file, the next writable open keeps or deletes it by the recorded hash.
            if isinstance(exc, sqlite3.Error | OSError):
                raise WatchlistError(
                    f"watchlist {self._dir}: update failed and was rolled back ({exc}); "
                    "check free space and permissions"
                ) from exc
            raise
        try:
            pending.replace(self._dir / INDEX_FILE)
            fsync_dir(self._dir)
        except OSError as exc:
            raise WatchlistError(
                f"watchlist {self._dir}: update committed but {PENDING_FILE} could not be "
                f"renamed ({exc.strerror or exc}); reopen the watchlist writable to finish"
            ) from exc
        conn.execute("BEGIN")
        try:
            label_subject, targets = _read_label_map(conn)
        finally:
            conn.execute("COMMIT")
        self._snap = _Snapshot(new_sha, new_index, label_subject, targets)


# ---------------------------------------------------------------------- helpers: db
def _connect(path: Path, *, writable: bool) -> sqlite3.Connection:
    """Autocommit connection (explicit BEGIN/COMMIT), FKs on, durable commits."""
    uri = path.resolve().as_uri() + ("?mode=rwc" if writable else "?mode=ro")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA foreign_keys=ON")
    if writable:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
    return conn


def _exec_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the current transaction (executescript would COMMIT)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _take_writer_lock(directory: Path) -> IO[bytes]:
    try:
        fh = (directory / LOCK_FILE).open("ab")
    except OSError as exc:
        raise WatchlistError(
            f"watchlist {directory}: cannot open {LOCK_FILE} for writing "
            f"({exc.strerror or exc}); check permissions, or open read-only"
        ) from exc
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        raise WatchlistError(
            f"watchlist {directory} is already open for writing (by another process or object); close it and retry"
        ) from exc
    return fh


def _read_meta(conn: sqlite3.Connection, directory: Path) -> dict[str, str]:
    meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise WatchlistError(f"watchlist {directory}: meta is missing {', '.join(missing)}; restore from backup")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise WatchlistError(
            f"watchlist {directory} has schema version {meta['schema_version']}, but this "
            f"streamproc reads version {SCHEMA_VERSION}; use a matching streamproc release"
        )
    return meta


def _meta_value(conn: sqlite3.Connection, key: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise WatchlistError(f"watchlist meta key {key} is missing; restore from backup")
    return str(row[0])


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
    )


def _audit(
    conn: sqlite3.Connection, at: datetime, actor: str, action: str, *, subject_id: str | None, detail: str
) -> None:
    conn.execute(
        "INSERT INTO audit(at, actor, action, subject_id, detail) VALUES (?, ?, ?, ?, ?)",
        (_iso(at), actor, action, subject_id, detail),
    )


def _identity_from_meta(meta: Mapping[str, str], directory: Path) -> EmbedderIdentity:
    metric = meta["metric"]
    if metric not in get_args(Metric) or not meta["dim"].isdigit():
        raise WatchlistError(
            f"watchlist {directory}: meta has invalid dim/metric ({meta['dim']!r}, {metric!r}); restore from backup"
        )
    return EmbedderIdentity(
        kind=meta["embedder_kind"],
        model_sha256=meta["model_sha256"],
        dim=int(meta["dim"]),
        metric="l2" if metric == "l2" else "cosine",
    )


def _check_embedder(directory: Path, stored: EmbedderIdentity, configured: EmbedderIdentity) -> None:
    if (stored.kind, stored.model_sha256) != (configured.kind, configured.model_sha256):
        raise WatchlistError(
            f"watchlist {directory} was enrolled with {stored.kind} model {stored.model_sha256[:12]}, but the "
            f"configured embedder is {configured.kind} {configured.model_sha256[:12]}; re-enrol the subjects "
            "with this model to switch"
        )
    if (stored.dim, stored.metric) != (configured.dim, configured.metric):
        raise WatchlistError(
            f"watchlist {directory} stores {stored.dim}-d {stored.metric} templates, but the configured "
            f"embedder gives {configured.dim}-d {configured.metric}; fix the embedder configuration"
        )


def _read_label_map(conn: sqlite3.Connection) -> tuple[dict[int, str], dict[str, _Target]]:
    targets = {
        str(sid): _Target(str(name), _parse_opt(exp))
        for sid, name, exp in conn.execute(
            "SELECT subject_id, display_name, expires_at FROM subjects WHERE removed_at IS NULL"
        )
    }
    label_subject = {
        int(lab): str(sid) for lab, sid in conn.execute("SELECT label, subject_id FROM templates WHERE deleted = 0")
    }
    return label_subject, targets


def _read_snapshot(conn: sqlite3.Connection, directory: Path, identity: EmbedderIdentity, *, repair: bool) -> _Snapshot:
    """Meta, label map and index under one read transaction; retry if a writer's rename races us."""
    failure: WatchlistError | None = None
    for attempt in range(_SNAPSHOT_RETRIES):
        conn.execute("BEGIN")
        try:
            recorded = _meta_value(conn, "index_sha256")
            params = IndexParams(
                dim=identity.dim, metric=identity.metric, ef_search=max(1, int(_meta_value(conn, "ef_search")))
            )
            label_subject, targets = _read_label_map(conn)
            try:
                index = _load_index(directory, params, recorded, repair=repair)
            except IndexChecksumError as exc:
                failure = exc
            else:
                if len(index) != len(label_subject):
                    _log.warning(
                        "watchlist %s: index has %d live templates, database %d; run verify",
                        directory,
                        len(index),
                        len(label_subject),
                    )
                return _Snapshot(recorded, index, label_subject, targets)
        except (sqlite3.Error, ValueError) as exc:
            raise WatchlistError(
                f"watchlist {directory}: database unreadable or inconsistent ({exc}); restore from backup"
            ) from exc
        finally:
            conn.execute("COMMIT")
        if repair:  # we hold the writer lock: nobody is mid-update, so a mismatch is real
            break
        time.sleep(0.05 * (attempt + 1))
    assert failure is not None
    raise WatchlistError(f"watchlist {directory}: {failure}")


def _load_index(directory: Path, params: IndexParams, recorded: str, *, repair: bool) -> HnswIndex:
    """Load ``index.hnsw``, or the pending file if it carries the recorded hash (interrupted update)."""
    main, pending = directory / INDEX_FILE, directory / PENDING_FILE
    if not main.exists() and not pending.exists():
        raise WatchlistError(
            f"watchlist {directory}: index file {INDEX_FILE} is missing; restore from backup or re-enrol"
        )
    first_error: IndexChecksumError | None = None
    if main.exists():
        try:
            index = HnswIndex.load(main, params, recorded)
        except IndexChecksumError as exc:
            first_error = exc
        else:
            if repair and pending.exists():
                _log.info("watchlist %s: removing stale %s", directory, PENDING_FILE)
                pending.unlink(missing_ok=True)
            return index
    if pending.exists():
        try:
            index = HnswIndex.load(pending, params, recorded)
        except IndexChecksumError as exc:
            first_error = first_error or exc
        else:
            if repair:
                _log.warning("watchlist %s: finishing an update interrupted after commit", directory)
                try:
                    pending.replace(main)
                except OSError as exc:
                    raise WatchlistError(
                        f"watchlist {directory}: cannot rename {PENDING_FILE} to {INDEX_FILE} "
                        f"({exc.strerror or exc}); check permissions"
                    ) from exc
                fsync_dir(directory)
            return index
    assert first_error is not None
    raise first_error


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete tmp files left by a writer that crashed inside HnswIndex.save (writer lock held)."""
    for stale in directory.glob(f".{INDEX_FILE}*.tmp"):
        _log.info("watchlist %s: removing stale temporary %s", directory, stale.name)
        stale.unlink(missing_ok=True)


def _live_vectors(conn: sqlite3.Connection, dim: int, directory: Path) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """``(N,)`` labels and ``(N, dim)`` vectors of live templates of non-removed subjects."""
    rows = conn.execute(
        "SELECT t.label, t.vector FROM templates t JOIN subjects s USING(subject_id) "
        "WHERE t.deleted = 0 AND s.removed_at IS NULL ORDER BY t.label"
    ).fetchall()
    labels = np.array([int(r[0]) for r in rows], dtype=np.int64)
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    for i, (label, blob) in enumerate(rows):
        vec = _from_blob(blob, dim)
        if vec is None:
            raise WatchlistError(
                f"watchlist {directory}: template {label} has a missing or malformed vector; "
                "run verify, then remove and re-enrol its subject"
            )
        vectors[i] = vec
    return labels, vectors


def _tune(index: HnswIndex, conn: sqlite3.Connection, identity: EmbedderIdentity, directory: Path) -> int:
    """Tune ef on perturbed stored templates (probe-like) plus random vectors (impostor-like)."""
    _, vectors = _live_vectors(conn, identity.dim, directory)
    if vectors.shape[0] == 0:
        return index.params.ef_search
    rng = np.random.default_rng(_TUNE_SEED)
    sample = vectors[rng.choice(vectors.shape[0], size=min(_TUNE_SAMPLE, vectors.shape[0]), replace=False)]
    scale = float(np.mean(np.linalg.norm(vectors, axis=1)))
    noise = rng.standard_normal(sample.shape).astype(np.float32) * (0.3 * scale / np.sqrt(identity.dim))
    randoms = rng.standard_normal((_TUNE_SAMPLE, identity.dim)).astype(np.float32) * (scale / np.sqrt(identity.dim))
    queries = np.concatenate([sample + noise, randoms]).astype(np.float32)
    if identity.metric == "cosine":
        queries = normalise(queries)
    return tune_ef(index, queries)


# ---------------------------------------------------------------------- helpers: validation
def _check_subject(subject: NewSubject, now: datetime) -> None:
    for name in ("subject_id", "display_name", "reason", "legal_basis", "added_by"):
        if not str(getattr(subject, name)).strip():
            raise EnrolmentError(f"enrolment refused: {name} is empty (it is recorded for accountability)")
    if subject.subject_id != subject.subject_id.strip():
        raise EnrolmentError(f"enrolment refused: subject_id {subject.subject_id!r} has surrounding whitespace")
    if subject.expires_at is not None and _utc_now(subject.expires_at) <= now:
        raise EnrolmentError(f"enrolment refused: expires_at {subject.expires_at.isoformat()} is not in the future")


def _check_templates(templates: Sequence[NewTemplate], identity: EmbedderIdentity) -> NDArray[np.float32]:
    """Validate all templates up front; return ``(N, dim)`` float32 (unit rows for cosine)."""
    if not templates:
        raise EnrolmentError("enrolment refused: no templates")
    rows = []
    for i, t in enumerate(templates):
        vec = np.asarray(t.vector)
        if vec.shape != (identity.dim,):
            raise EnrolmentError(
                f"enrolment refused: template {i} has shape {vec.shape}, expected "
                f"({identity.dim},) from {identity.kind}"
            )
        vec = vec.astype(np.float32)
        if not np.all(np.isfinite(vec)):
            raise EnrolmentError(f"enrolment refused: template {i} contains NaN or infinity")
        if identity.metric == "cosine":
            norm = float(np.linalg.norm(vec))
            if abs(norm - 1.0) > _UNIT_NORM_TOL:
                raise EnrolmentError(
                    f"enrolment refused: template {i} has L2 norm {norm:.4f}; cosine "
                    "watchlists need L2-normalised embeddings"
                )
            vec = vec / norm
        if not _SHA256_RE.fullmatch(t.source_sha256):
            raise EnrolmentError(f"enrolment refused: template {i} source_sha256 is not 64 lowercase hex digits")
        if not np.isfinite(t.quality):
            raise EnrolmentError(f"enrolment refused: template {i} quality is not finite")
        rows.append(vec)
    return np.stack(rows).astype(np.float32)


def _check_index_file(directory: Path, recorded: str, loaded: str) -> list[str]:
    main = directory / INDEX_FILE
    if not main.exists():
        return [f"index file {INDEX_FILE} is missing"]
    try:
        found = sha256_file(main)
    except OSError as exc:
        return [f"index file unreadable: {exc}"]
    problems = []
    if found != recorded:
        problems.append(f"index checksum mismatch (meta {recorded[:12]}…, file {found[:12]}…)")
    if loaded != recorded:
        problems.append(
            f"watchlist changed since it was opened (loaded {loaded[:12]}…, now {recorded[:12]}…); "
            "reopen to verify the current state"
        )
    return problems


def _compare_templates(index: HnswIndex, db_live: Mapping[int, object], identity: EmbedderIdentity) -> list[str]:
    """Database live templates vs index: same label set, same vectors, each retrievable at distance ~0."""
    problems: list[str] = []
    idx_labels = {int(x) for x in index.labels()}
    if len(index) != len(db_live):
        problems.append(f"index has {len(index)} live templates, database {len(db_live)}")
    problems += [
        f"template {lab} is live in the database but not in the index" for lab in sorted(set(db_live) - idx_labels)
    ]
    problems += [
        f"label {lab} is live in the index but not in the database" for lab in sorted(idx_labels - set(db_live))
    ]
    common: list[int] = []
    db_vectors: list[NDArray[np.float32]] = []
    for lab in sorted(set(db_live) & idx_labels):
        vec = _from_blob(db_live[lab], identity.dim)
        if vec is None:
            problems.append(f"template {lab} has a missing or malformed vector in the database")
            continue
        common.append(lab)
        db_vectors.append(vec)
    if not common:
        return problems
    labels = np.array(common, dtype=np.int64)
    db_mat = np.stack(db_vectors)
    if identity.metric == "cosine":
        db_mat = normalise(db_mat)
    stored = index.get_vectors(labels)
    diff = np.max(np.abs(stored - db_mat), axis=1)
    problems += [
        f"template {lab}: database vector differs from the index (max abs diff {d:.3g}); "
        "the database or index was modified outside streamproc"
        for lab, d in zip(common, diff, strict=True)
        if d > _VERIFY_VECTOR_TOL
    ]
    _, dists = index.search(db_mat, 1)
    tol = _VERIFY_DIST_TOL * max(1.0, float(np.mean(np.linalg.norm(db_mat, axis=1))))
    problems += [
        f"template {lab} is not retrievable by search (nearest distance {d:.3g})"
        for lab, d in zip(common, dists[:, 0], strict=True)
        if d > tol
    ]
    return problems


# ---------------------------------------------------------------------- helpers: pure
def _collapse(
    labels: NDArray[np.int64], dists: NDArray[np.float32], k: int, snap: _Snapshot, now: datetime
) -> list[Candidate]:
    """Best hit per active subject, ascending, at most ``k`` (inputs are one query's ascending hits)."""
    out: list[Candidate] = []
    seen: set[str] = set()
    for label, dist in zip(labels.tolist(), dists.tolist(), strict=True):
        sid = snap.label_subject.get(label)
        target = snap.targets.get(sid) if sid is not None else None
        if sid is None or target is None or sid in seen or not _is_live(target.expires_at, now):
            continue
        seen.add(sid)
        out.append(Candidate(subject_id=sid, display_name=target.display_name, label=label, distance=dist))
        if len(out) == k:
            break
    return out


def _is_live(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is None or expires_at > now


def _subject_from_row(row: Sequence[object]) -> Subject:
    sid, name, reason, basis, by, added, expires, removed, n = row
    return Subject(
        subject_id=str(sid),
        display_name=str(name),
        reason=str(reason),
        legal_basis=str(basis),
        added_by=str(by),
        added_at=_parse(str(added)),
        expires_at=_parse_opt(expires),
        n_templates=int(str(n)),
        removed_at=_parse_opt(removed),
    )


def _to_blob(vec: NDArray[np.float32]) -> bytes:
    """float32 little-endian bytes (portable across hosts)."""
    return np.asarray(vec, dtype="<f4").tobytes()


def _from_blob(blob: object, dim: int) -> NDArray[np.float32] | None:
    if not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _utc_now(value: datetime | None) -> datetime:
    """``value`` (must be timezone-aware) in UTC, or the current UTC time."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware (UTC) datetime")
    return value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc_now(value).isoformat(timespec="microseconds")


def _iso_opt(value: datetime | None) -> str | None:
    return None if value is None else _iso(value)


def _parse(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_opt(text: object) -> datetime | None:
    return None if text is None else _parse(str(text))
