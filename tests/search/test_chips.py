"""Enrolment chips in the watchlist: stored at enrolment, read back exactly, erased with the subject."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from streamproc.errors import EnrolmentError
from streamproc.search.index import normalise
from streamproc.search.store import DB_FILE
from streamproc.search.templates import NewSubject, NewTemplate
from streamproc.search.watchlist import Watchlist
from streamproc.types import EmbedderIdentity

MODEL = EmbedderIdentity(kind="dlib-resnet", model_sha256="a" * 64, dim=8, metric="cosine")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _template(rng: np.random.Generator, tag: str, chip: np.ndarray | None) -> NewTemplate:
    vec = normalise(rng.standard_normal((1, 8)).astype(np.float32))[0]
    return NewTemplate(vector=vec, source_sha256=hashlib.sha256(tag.encode()).hexdigest(), quality=0.9, chip=chip)


def _subject(sid: str, expires_at: datetime | None = None) -> NewSubject:
    return NewSubject(sid, f"Person {sid}", "warrant", "court order", "officer-7", expires_at)


def test_chips_round_trip_and_are_erased_with_the_subject(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    chips = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(3)]
    with Watchlist.create(tmp_path / "wl", MODEL) as wl:
        wl.enroll(_subject("A"), [_template(rng, "a0", chips[0]), _template(rng, "a1", chips[1])], now=T0)
        wl.enroll(_subject("B"), [_template(rng, "b0", chips[2]), _template(rng, "b1", None)], now=T0)
        stored_a = wl.enrolment_chips("A")
        assert [label for label, _ in stored_a] == [0, 1]
        assert all(np.array_equal(got, want) for (_, got), want in zip(stored_a, chips[:2], strict=True))
        assert [label for label, _ in wl.enrolment_chips("B")] == [2]  # a template without a chip has none
        assert wl.verify() == []
        wl.remove("A", removed_by="officer-7", reason="case closed", now=T0)
        assert wl.enrolment_chips("A") == []
        assert wl.enrolment_chips("nobody") == []
    with Watchlist.open(tmp_path / "wl") as reader:  # read-only handles read them too
        ((label, chip),) = reader.enrolment_chips("B")
        assert label == 2 and np.array_equal(chip, chips[2])
    with sqlite3.connect(tmp_path / "wl" / DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM enrolment_chips WHERE subject_id = 'A'").fetchone() == (0,)
    assert chips[0].tobytes()[:4096] not in (tmp_path / "wl" / DB_FILE).read_bytes()  # erased, not just unlinked


def test_expiry_erases_chips_and_old_watchlists_have_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    chip = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    with Watchlist.create(tmp_path / "wl", MODEL) as wl:
        wl.enroll(_subject("old"), [_template(rng, "o", None)], now=T0)  # no chip: no table yet
        assert wl.enrolment_chips("old") == []
        wl.enroll(_subject("E", expires_at=T0 + timedelta(days=1)), [_template(rng, "e", chip)], now=T0)
        assert len(wl.enrolment_chips("E")) == 1
        for subject in wl.expired(T0 + timedelta(days=2)):
            wl.remove(subject.subject_id, removed_by="expiry", reason="expired", now=T0 + timedelta(days=2))
        assert wl.enrolment_chips("E") == []


@pytest.mark.parametrize(
    "chip",
    [np.zeros((112, 112), np.uint8), np.zeros((112, 112, 3), np.float32), np.zeros((2000, 10, 3), np.uint8)],
)
def test_a_malformed_chip_is_refused_before_anything_is_written(tmp_path: Path, chip: np.ndarray) -> None:
    rng = np.random.default_rng(9)
    with Watchlist.create(tmp_path / "wl", MODEL) as wl:
        with pytest.raises(EnrolmentError, match="uint8 RGB"):
            wl.enroll(_subject("A"), [_template(rng, "a", chip)], now=T0)
        assert wl.subjects() == []
