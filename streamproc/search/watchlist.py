"""The watchlist: a directory of SQLite metadata + an HNSW index file + an integrity manifest.

Directory layout::

    watchlist.sqlite        subjects, templates (with their vectors), meta, audit   (search/store)
    index.hnsw              HnswIndex file; its sha256 is meta.index_sha256      (search/integrity)
    index.hnsw.pending      only between a commit and its rename                 (search/integrity)
    watchlist.lock          flock()ed by the single writer                       (search/store)

:class:`Watchlist` is the facade: open/create, enrol, remove, compact, search, verify. The values it takes and
returns are in :mod:`streamproc.search.templates`; every change runs under the crash-ordered update protocol
of :mod:`streamproc.search.integrity`. Removal erases a subject's vectors from the database and marks them
deleted in the index, and :meth:`Watchlist.compact` drops them from the index file too.

Concurrency: one writer process at a time (``watchlist.lock``, non-blocking: a second writer gets a clear
error). Readers in other processes get a consistent snapshot (retried if they race a writer's rename).
:meth:`Watchlist.index_version` is a cheap poll for hot reload. Within a process, a Watchlist object may be
shared between threads (an RLock serialises its methods).

Vectors are ``(dim,)`` / ``(Q, dim)`` float32; for the cosine metric they must be L2-normalised (checked at
enrolment). Timestamps are aware UTC datetimes, stored as ISO-8601 text.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamproc.errors import WatchlistError
from streamproc.search.chips import check_chip, erase_chips, read_chips, store_chips
from streamproc.search.index import HnswIndex, IndexParams, fsync_dir, normalise
from streamproc.search.integrity import (
    INDEX_FILE,
    Snapshot,
    check_database,
    commit_update,
    read_snapshot,
    remove_stale_temporaries,
    verify,
)
from streamproc.search.store import (
    DB_FILE,
    check_embedder,
    connect,
    identity_from_meta,
    initialise,
    insert_subject,
    insert_templates,
    live_vectors,
    mark_removed,
    read_meta,
    removal_state,
    select_subjects,
    take_writer_lock,
    write_audit,
)
from streamproc.search.templates import (
    NewSubject,
    NewTemplate,
    Subject,
    check_subject,
    check_templates,
    is_live,
    utc_now,
)
from streamproc.search.tuning import tune_ef
from streamproc.types import EmbedderIdentity

_log = logging.getLogger(__name__)

_TUNE_SAMPLE: Final = 1000  # near + random: up to 2000 tuning queries
_TUNE_SEED: Final = 20240601


@dataclass(frozen=True)
class Candidate:
    """A search hit: the subject's best template and its distance (metric's natural unit)."""

    subject_id: str
    display_name: str
    label: int
    distance: float


class Watchlist:
    """A watchlist directory opened for searching (and, if writable, for changes)."""

    def __init__(
        self,
        directory: Path,
        conn: sqlite3.Connection,
        embedder: EmbedderIdentity,
        snapshot: Snapshot,
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
            conn = connect(staging / DB_FILE, writable=True)
            try:
                initialise(conn, embedder, index_sha, params.ef_search, utc_now(None))
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
        interrupted between commit and rename (see :mod:`streamproc.search.integrity`).
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise WatchlistError(f"watchlist {directory} is a file, not a watchlist directory")
        if not directory.is_dir():
            raise WatchlistError(f"watchlist {directory} does not exist; create it or enrol a subject first")
        if not (directory / DB_FILE).is_file():
            if (directory / INDEX_FILE).exists():  # the index without its database: damaged
                raise WatchlistError(f"watchlist {directory}: {DB_FILE} is missing; damaged: restore from backup")
            if not any(directory.iterdir()):
                raise WatchlistError(f"watchlist {directory} is empty: enrol a subject to create one there")
            raise WatchlistError(
                f"watchlist {directory} has no {DB_FILE}: not a watchlist directory, or a damaged one "
                "(then restore it from backup)"
            )
        with contextlib.ExitStack() as stack:
            lock_file = take_writer_lock(directory) if writable else None
            if lock_file is not None:
                stack.callback(lock_file.close)
            try:
                conn = connect(directory / DB_FILE, writable=writable)
                stack.callback(conn.close)
                if writable:
                    conn.execute("PRAGMA journal_mode=WAL")
                meta = read_meta(conn, directory)
            except sqlite3.Error as exc:
                raise WatchlistError(
                    f"watchlist {directory}: database unreadable ({exc}); restore from backup"
                ) from exc
            stored = identity_from_meta(meta, directory)
            if embedder is not None:
                check_embedder(directory, stored, embedder)
            snapshot = read_snapshot(conn, directory, stored, repair=writable)
            if writable:
                remove_stale_temporaries(directory)
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
        now = utc_now(None)
        with self._mutex:
            return sum(1 for t in self._snap.targets.values() if is_live(t.expires_at, now))

    # ---------------------------------------------------------- queries
    def subjects(self, include_removed: bool = False) -> list[Subject]:
        """All non-removed subjects (expired included), oldest first."""
        with self._mutex:
            self._check_open()
            return select_subjects(self._conn, include_removed=include_removed)

    def enrolment_chips(self, subject_id: str) -> list[tuple[int, NDArray[np.uint8]]]:
        """``(template_label, (H, W, 3) uint8 RGB chip)`` of the subject's live templates, in label order; empty
        for a removed subject or one enrolled before chips were stored. Read-only handles can read them."""
        with self._mutex:
            self._check_open()
            return read_chips(self._conn, subject_id)

    def expired(self, now: datetime) -> list[Subject]:
        """Non-removed subjects with ``expires_at <= now`` (candidates for :meth:`remove`)."""
        now = utc_now(now)
        return [s for s in self.subjects() if s.expires_at is not None and s.expires_at <= now]

    def search(self, queries: ArrayLike, k: int = 5, now: datetime | None = None) -> list[list[Candidate]]:
        """Up to ``k`` distinct active subjects per ``(Q, dim)`` float32 query, best first.

        Each subject appears once, at its best template's distance. Removed and
        expired (``expires_at <= now``) subjects are skipped; the index is
        over-fetched until ``k`` subjects are found or it is exhausted.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        now = utc_now(now)
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
        now = utc_now(now)
        check_subject(subject, now)
        vectors = check_templates(templates, self._embedder)
        for t in templates:
            if t.chip is not None:
                check_chip(t.chip)
        with self._mutex:
            self._require_writable()

            def change(conn: sqlite3.Connection, index: HnswIndex) -> HnswIndex:
                enrolled, removed_at = removal_state(conn, subject.subject_id)
                if removed_at is not None:
                    raise WatchlistError(
                        f"subject {subject.subject_id} was removed at {removed_at}; enrol under a new subject_id"
                    )
                if enrolled and not add_to_existing:
                    raise WatchlistError(
                        f"subject {subject.subject_id} already enrolled; use --add-templates to add templates to it"
                    )
                if not enrolled and add_to_existing:
                    raise WatchlistError(f"subject {subject.subject_id} is not enrolled; enrol it first")
                if not enrolled:
                    insert_subject(conn, subject, now)
                labels = insert_templates(conn, subject.subject_id, templates, vectors, now)
                store_chips(conn, subject.subject_id, [int(x) for x in labels], [t.chip for t in templates])
                write_audit(
                    conn,
                    now,
                    subject.added_by,
                    "add_templates" if enrolled else "enroll",
                    subject_id=subject.subject_id,
                    detail=f"{len(templates)} template(s), labels {labels[0]}..{labels[-1]}; "
                    f"reason: {subject.reason}; legal basis: {subject.legal_basis}",
                )
                new_index = index.copy()
                new_index.add(vectors, labels)
                return new_index

            self._update(change, retune=True)
            return self._subject(subject.subject_id)

    def remove(self, subject_id: str, removed_by: str, reason: str, *, now: datetime | None = None) -> None:
        """Remove a subject: stamp ``removed_at``, delete and erase its templates, audit who/why."""
        now = utc_now(now)
        if not removed_by.strip() or not reason.strip():
            raise WatchlistError("removal needs removed_by and reason (recorded in the audit log)")
        with self._mutex:
            self._require_writable()

            def change(conn: sqlite3.Connection, index: HnswIndex) -> HnswIndex:
                enrolled, removed_at = removal_state(conn, subject_id)
                if not enrolled:
                    raise WatchlistError(
                        f"watchlist {self._dir}: unknown subject {subject_id}; list subjects to check the id"
                    )
                if removed_at is not None:
                    raise WatchlistError(f"subject {subject_id} was already removed at {removed_at}")
                labels = mark_removed(conn, subject_id, now)
                erase_chips(conn, subject_id)
                write_audit(
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
                labels, vectors = live_vectors(conn, self._embedder.dim, self._dir)
                fresh = HnswIndex(index.params, capacity=max(1024, labels.size))
                fresh.add(vectors, labels)
                write_audit(
                    conn,
                    utc_now(None),
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
        with self._mutex:
            self._check_open()
            db = check_database(self._conn)
            snap = self._snap
        return verify(self._dir, db, snap, self._embedder)

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
        """Run ``change`` (then retune ef if asked) under the integrity module's update protocol."""

        def change_and_tune(conn: sqlite3.Connection, index: HnswIndex) -> HnswIndex:
            new_index = change(conn, index)
            if retune:
                new_index.ef_search = _tune(new_index, conn, self._embedder, self._dir)
            return new_index

        self._snap = commit_update(self._conn, self._dir, self._snap.index, change_and_tune)


def _tune(index: HnswIndex, conn: sqlite3.Connection, identity: EmbedderIdentity, directory: Path) -> int:
    """Tune ef on perturbed stored templates (probe-like) plus random vectors (impostor-like)."""
    _, vectors = live_vectors(conn, identity.dim, directory)
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


def _collapse(
    labels: NDArray[np.int64], dists: NDArray[np.float32], k: int, snap: Snapshot, now: datetime
) -> list[Candidate]:
    """Best hit per active subject, ascending, at most ``k`` (inputs are one query's ascending hits)."""
    out: list[Candidate] = []
    seen: set[str] = set()
    for label, dist in zip(labels.tolist(), dists.tolist(), strict=True):
        sid = snap.label_subject.get(label)
        target = snap.targets.get(sid) if sid is not None else None
        if sid is None or target is None or sid in seen or not is_live(target.expires_at, now):
            continue
        seen.add(sid)
        out.append(Candidate(subject_id=sid, display_name=target.display_name, label=label, distance=dist))
        if len(out) == k:
            break
    return out
