"""The watchlist's integrity: the index file's checksum in meta, crash-ordered updates, consistent reads, verify.

Files::

    index.hnsw              HnswIndex file; its sha256 is meta.index_sha256
    index.hnsw.pending      only between a commit and its rename (see below)

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

Readers in other processes get a consistent snapshot: meta, the label map and the index are read under one
SQLite read transaction, and a reader that races a writer's rename retries with a fresh snapshot.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import WatchlistError
from streamproc.search.index import HnswIndex, IndexChecksumError, IndexParams, fsync_dir, normalise, sha256_file
from streamproc.search.store import Target, meta_value, read_label_map, set_meta
from streamproc.search.templates import from_blob
from streamproc.types import EmbedderIdentity

_log = logging.getLogger(__name__)

INDEX_FILE: Final = "index.hnsw"
PENDING_FILE: Final = "index.hnsw.pending"

_SNAPSHOT_RETRIES: Final = 5
_VERIFY_VECTOR_TOL: Final = 1e-4
_VERIFY_DIST_TOL: Final = 1e-3


@dataclass(frozen=True)
class Snapshot:
    """In-memory state read under one transaction: index + label -> subject map."""

    index_sha256: str
    index: HnswIndex
    label_subject: Mapping[int, str]
    targets: Mapping[str, Target]


# ---------------------------------------------------------------------- reading
def read_snapshot(conn: sqlite3.Connection, directory: Path, identity: EmbedderIdentity, *, repair: bool) -> Snapshot:
    """Meta, label map and index under one read transaction; retry if a writer's rename races us."""
    failure: WatchlistError | None = None
    for attempt in range(_SNAPSHOT_RETRIES):
        conn.execute("BEGIN")
        try:
            recorded = meta_value(conn, "index_sha256")
            params = IndexParams(
                dim=identity.dim, metric=identity.metric, ef_search=max(1, int(meta_value(conn, "ef_search")))
            )
            label_subject, targets = read_label_map(conn)
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
                return Snapshot(recorded, index, label_subject, targets)
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


def remove_stale_temporaries(directory: Path) -> None:
    """Delete tmp files left by a writer that crashed inside HnswIndex.save (writer lock held)."""
    for stale in directory.glob(f".{INDEX_FILE}*.tmp"):
        _log.info("watchlist %s: removing stale temporary %s", directory, stale.name)
        stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------- updating
def commit_update(
    conn: sqlite3.Connection,
    directory: Path,
    index: HnswIndex,
    change: Callable[[sqlite3.Connection, HnswIndex], HnswIndex],
) -> Snapshot:
    """Run ``change`` under the update protocol in the module docstring; return the new snapshot.

    ``change`` writes rows inside the open transaction and returns the new index (a copy of ``index``,
    which stays valid if anything fails). The caller holds the writer lock.
    """
    pending = directory / PENDING_FILE
    conn.execute("BEGIN IMMEDIATE")
    try:
        new_index = change(conn, index)
        new_sha = new_index.save(pending)
        set_meta(conn, "index_sha256", new_sha)
        set_meta(conn, "ef_search", str(new_index.ef_search))
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
            pending.unlink(missing_ok=True)
        # else COMMIT itself failed and its outcome is unknown: keep the pending
        # file, the next writable open keeps or deletes it by the recorded hash.
        if isinstance(exc, sqlite3.Error | OSError):
            raise WatchlistError(
                f"watchlist {directory}: update failed and was rolled back ({exc}); check free space and permissions"
            ) from exc
        raise
    try:
        pending.replace(directory / INDEX_FILE)
        fsync_dir(directory)
    except OSError as exc:
        raise WatchlistError(
            f"watchlist {directory}: update committed but {PENDING_FILE} could not be "
            f"renamed ({exc.strerror or exc}); reopen the watchlist writable to finish"
        ) from exc
    conn.execute("BEGIN")
    try:
        label_subject, targets = read_label_map(conn)
    finally:
        conn.execute("COMMIT")
    return Snapshot(new_sha, new_index, label_subject, targets)


# ---------------------------------------------------------------------- verifying
@dataclass(frozen=True)
class DatabaseCheck:
    """What verify reads from the database under one transaction, and the problems found there alone."""

    problems: list[str]
    recorded_sha256: str
    live: Mapping[int, object]  # label -> stored vector blob of every live template
    empty_subjects: list[str]
    orphan_labels: list[int]


def check_database(conn: sqlite3.Connection) -> DatabaseCheck:
    """SQLite integrity and foreign keys, the recorded index hash, live templates, empty subjects, orphans."""
    problems: list[str] = []
    conn.execute("BEGIN")
    try:
        integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"database integrity check: {'; '.join(integrity[:3])}")
        if conn.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("database has templates whose subject does not exist")
        recorded = meta_value(conn, "index_sha256")
        db_live = {int(r[0]): r[1] for r in conn.execute("SELECT label, vector FROM templates WHERE deleted = 0")}
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
    return DatabaseCheck(problems, recorded, db_live, empty, orphans)


def verify(directory: Path, db: DatabaseCheck, snap: Snapshot, identity: EmbedderIdentity) -> list[str]:
    """Cross-check the database reads, the index file and the in-memory index; problems (empty = OK)."""
    problems = list(db.problems)
    problems += _check_index_file(directory, db.recorded_sha256, snap.index_sha256)
    problems += _compare_templates(snap.index, db.live, identity)
    problems += [f"subject {s} has no live templates" for s in db.empty_subjects]
    problems += [f"template {lab} belongs to a removed subject but is still live" for lab in db.orphan_labels]
    return problems


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
        vec = from_blob(db_live[lab], identity.dim)
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
