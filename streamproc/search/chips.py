"""Enrolment chips: the aligned face each template was made from, so a reviewer compares faces, not names.

One row per template label in the ``enrolment_chips`` table of the watchlist database: the chip as raw RGB bytes
(``(H, W, 3)`` uint8, lossless, exactly what the embedder saw) with its height and width. Only the aligned chip
is kept, never the enrolment photo around it. Chips go with their subject: removal (and expiry, which removes)
deletes them in the same transaction as the templates, with ``secure_delete`` on.

The table is created by the first enrolment that stores a chip, so watchlists made before chips were kept open
unchanged (their subjects simply have none; re-enrol to add them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import EnrolmentError

_TABLE: Final = """CREATE TABLE IF NOT EXISTS enrolment_chips(
    label INTEGER PRIMARY KEY REFERENCES templates(label),
    subject_id TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    rgb BLOB NOT NULL
)"""
_MAX_SIDE: Final = 1024


def check_chip(chip: NDArray[np.uint8]) -> None:
    """Refuse what is not an ``(H, W, 3)`` uint8 RGB chip of at most 1024 px a side."""
    if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3 or not 0 < max(chip.shape[:2]) <= _MAX_SIDE:
        raise EnrolmentError(f"an enrolment chip must be (H, W, 3) uint8 RGB, not {chip.shape} {chip.dtype}")


def store_chips(
    conn: sqlite3.Connection, subject_id: str, labels: Sequence[int], chips: Sequence[NDArray[np.uint8] | None]
) -> int:
    """Store each template's chip under its label (inside the caller's transaction); how many were stored."""
    rows = [
        (int(label), subject_id, int(chip.shape[0]), int(chip.shape[1]), np.ascontiguousarray(chip).tobytes())
        for label, chip in zip(labels, chips, strict=True)
        if chip is not None
    ]
    if rows:
        conn.execute(_TABLE)
        conn.executemany(
            "INSERT INTO enrolment_chips(label, subject_id, height, width, rgb) VALUES (?, ?, ?, ?, ?)", rows
        )
    return len(rows)


def erase_chips(conn: sqlite3.Connection, subject_id: str) -> int:
    """Delete the subject's chips (inside the caller's transaction); how many were deleted."""
    if not _has_table(conn):
        return 0
    return conn.execute("DELETE FROM enrolment_chips WHERE subject_id = ?", (subject_id,)).rowcount


def read_chips(conn: sqlite3.Connection, subject_id: str) -> list[tuple[int, NDArray[np.uint8]]]:
    """``(template_label, (H, W, 3) uint8 RGB)`` of the subject's live templates, in label order."""
    if not _has_table(conn):
        return []
    rows = conn.execute(
        "SELECT c.label, c.height, c.width, c.rgb FROM enrolment_chips c JOIN templates t ON t.label = c.label "
        "WHERE c.subject_id = ? AND t.deleted = 0 ORDER BY c.label",
        (subject_id,),
    ).fetchall()
    return [
        (int(label), np.frombuffer(bytes(rgb), np.uint8).reshape(int(h), int(w), 3).copy()) for label, h, w, rgb in rows
    ]


def _has_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'enrolment_chips'").fetchone()
    return found is not None


__all__ = ["check_chip", "erase_chips", "read_chips", "store_chips"]
