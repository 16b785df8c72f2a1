"""The watchlist's SQLite database: subjects, templates (with their vectors), meta and the change log.

Why the vectors are also in SQLite: the index can then be rebuilt (compact) and checked (verify) from the
database alone. They are enrolled-subject data only; removal erases a subject's vectors (``vector`` set to
NULL, ``secure_delete`` on). Connections are autocommit: callers open transactions with explicit
``BEGIN``/``COMMIT`` (see :mod:`streamproc.search.integrity` for the update protocol). Writers hold
``watchlist.lock`` (flock, non-blocking: a second writer gets a clear error).
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Final, get_args

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import WatchlistError
from streamproc.search.templates import (
    NewSubject,
    NewTemplate,
    Subject,
    from_blob,
    iso,
    iso_opt,
    parse_time,
    parse_time_opt,
    to_blob,
)
from streamproc.types import EmbedderIdentity, Metric

DB_FILE: Final = "watchlist.sqlite"
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


@dataclass(frozen=True)
class Target:
    """What search needs about a non-removed subject."""

    display_name: str
    expires_at: datetime | None


# ---------------------------------------------------------------------- connection, lock, schema
def connect(path: Path, *, writable: bool) -> sqlite3.Connection:
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


def take_writer_lock(directory: Path) -> IO[bytes]:
    """The flock()ed ``watchlist.lock``; closing the file releases it."""
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


def initialise(
    conn: sqlite3.Connection, embedder: EmbedderIdentity, index_sha256: str, ef_search: int, now: datetime
) -> None:
    """Schema, meta and the ``create`` change-log row, in one committed transaction (WAL journal)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    _exec_script(conn, _SCHEMA)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "embedder_kind": embedder.kind,
        "model_sha256": embedder.model_sha256,
        "dim": str(embedder.dim),
        "metric": embedder.metric,
        "index_sha256": index_sha256,
        "ef_search": str(ef_search),
        "next_label": "0",
    }
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
    write_audit(
        conn,
        now,
        "system",
        "create",
        subject_id=None,
        detail=f"embedder {embedder.kind} {embedder.model_sha256[:12]} dim={embedder.dim} metric={embedder.metric}",
    )
    conn.execute("COMMIT")


# ---------------------------------------------------------------------- meta
def read_meta(conn: sqlite3.Connection, directory: Path) -> dict[str, str]:
    """All meta keys; refuses a missing key or another schema version."""
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


def meta_value(conn: sqlite3.Connection, key: str) -> str:
    """One meta value (read inside the caller's transaction)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise WatchlistError(f"watchlist meta key {key} is missing; restore from backup")
    return str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Insert or replace one meta value."""
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value)
    )


def identity_from_meta(meta: Mapping[str, str], directory: Path) -> EmbedderIdentity:
    """The embedder the templates were made with, as recorded in meta."""
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


def check_embedder(directory: Path, stored: EmbedderIdentity, configured: EmbedderIdentity) -> None:
    """Refuse a configured embedder whose templates would not be comparable with the stored ones."""
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


def write_audit(
    conn: sqlite3.Connection, at: datetime, actor: str, action: str, *, subject_id: str | None, detail: str
) -> None:
    """One row of the watchlist's own change log (who did what, when, why)."""
    conn.execute(
        "INSERT INTO audit(at, actor, action, subject_id, detail) VALUES (?, ?, ?, ?, ?)",
        (iso(at), actor, action, subject_id, detail),
    )


# ---------------------------------------------------------------------- reads
def read_label_map(conn: sqlite3.Connection) -> tuple[dict[int, str], dict[str, Target]]:
    """Live template label -> subject id, and non-removed subject id -> :class:`Target`."""
    targets = {
        str(sid): Target(str(name), parse_time_opt(exp))
        for sid, name, exp in conn.execute(
            "SELECT subject_id, display_name, expires_at FROM subjects WHERE removed_at IS NULL"
        )
    }
    label_subject = {
        int(lab): str(sid) for lab, sid in conn.execute("SELECT label, subject_id FROM templates WHERE deleted = 0")
    }
    return label_subject, targets


def live_vectors(conn: sqlite3.Connection, dim: int, directory: Path) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """``(N,)`` labels and ``(N, dim)`` vectors of live templates of non-removed subjects."""
    rows = conn.execute(
        "SELECT t.label, t.vector FROM templates t JOIN subjects s USING(subject_id) "
        "WHERE t.deleted = 0 AND s.removed_at IS NULL ORDER BY t.label"
    ).fetchall()
    labels = np.array([int(r[0]) for r in rows], dtype=np.int64)
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    for i, (label, blob) in enumerate(rows):
        vec = from_blob(blob, dim)
        if vec is None:
            raise WatchlistError(
                f"watchlist {directory}: template {label} has a missing or malformed vector; "
                "run verify, then remove and re-enrol its subject"
            )
        vectors[i] = vec
    return labels, vectors


def select_subjects(conn: sqlite3.Connection, *, include_removed: bool) -> list[Subject]:
    """Subjects (non-removed unless ``include_removed``) with their live template counts, oldest first."""
    sql = (
        "SELECT s.subject_id, s.display_name, s.reason, s.legal_basis, s.added_by, s.added_at, "
        "s.expires_at, s.removed_at, (SELECT COUNT(*) FROM templates t "
        "WHERE t.subject_id = s.subject_id AND t.deleted = 0) FROM subjects s"
    )
    if not include_removed:
        sql += " WHERE s.removed_at IS NULL"
    rows = conn.execute(sql + " ORDER BY s.added_at, s.subject_id").fetchall()
    return [_subject_from_row(r) for r in rows]


def _subject_from_row(row: Sequence[object]) -> Subject:
    sid, name, reason, basis, by, added, expires, removed, n = row
    return Subject(
        subject_id=str(sid),
        display_name=str(name),
        reason=str(reason),
        legal_basis=str(basis),
        added_by=str(by),
        added_at=parse_time(str(added)),
        expires_at=parse_time_opt(expires),
        n_templates=int(str(n)),
        removed_at=parse_time_opt(removed),
    )


def removal_state(conn: sqlite3.Connection, subject_id: str) -> tuple[bool, str | None]:
    """``(enrolled, removed_at)``: whether the subject id was ever enrolled, and its stored removal time."""
    row = conn.execute("SELECT removed_at FROM subjects WHERE subject_id = ?", (subject_id,)).fetchone()
    if row is None:
        return False, None
    return True, None if row[0] is None else str(row[0])


# ---------------------------------------------------------------------- writes (inside the caller's transaction)
def insert_subject(conn: sqlite3.Connection, subject: NewSubject, added_at: datetime) -> None:
    """A new active subject row."""
    conn.execute(
        "INSERT INTO subjects(subject_id, display_name, reason, legal_basis, added_by, "
        "added_at, expires_at, removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            subject.subject_id,
            subject.display_name,
            subject.reason,
            subject.legal_basis,
            subject.added_by,
            iso(added_at),
            iso_opt(subject.expires_at),
        ),
    )


def insert_templates(
    conn: sqlite3.Connection,
    subject_id: str,
    templates: Sequence[NewTemplate],
    vectors: NDArray[np.float32],
    now: datetime,
) -> NDArray[np.int64]:
    """Template rows with the ``(N, dim)`` checked vectors under fresh labels; returns the ``(N,)`` labels."""
    first = int(meta_value(conn, "next_label"))
    labels = np.arange(first, first + len(templates), dtype=np.int64)
    conn.executemany(
        "INSERT INTO templates(label, subject_id, source_sha256, quality, created_at, deleted, "
        "vector) VALUES (?, ?, ?, ?, ?, 0, ?)",
        [
            (int(lab), subject_id, t.source_sha256, float(t.quality), iso(now), to_blob(vec))
            for lab, t, vec in zip(labels, templates, vectors, strict=True)
        ],
    )
    set_meta(conn, "next_label", str(first + len(templates)))
    return labels


def mark_removed(conn: sqlite3.Connection, subject_id: str, now: datetime) -> list[int]:
    """Stamp ``removed_at``, delete and erase the subject's templates; returns the labels that were live."""
    labels = [
        int(r[0])
        for r in conn.execute("SELECT label FROM templates WHERE subject_id = ? AND deleted = 0", (subject_id,))
    ]
    conn.execute("UPDATE subjects SET removed_at = ? WHERE subject_id = ?", (iso(now), subject_id))
    conn.execute("UPDATE templates SET deleted = 1, vector = NULL WHERE subject_id = ?", (subject_id,))
    return labels
