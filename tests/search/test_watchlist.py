"""Watchlist store: enrol/search/remove/expiry, integrity checks, atomic updates."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from streamproc.errors import EnrolmentError, WatchlistError
from streamproc.search.index import HnswIndex, normalise
from streamproc.search.integrity import INDEX_FILE, PENDING_FILE
from streamproc.search.store import DB_FILE
from streamproc.search.templates import NewSubject, NewTemplate
from streamproc.search.watchlist import Watchlist
from streamproc.types import EmbedderIdentity

DIM = 128
MODEL = EmbedderIdentity(kind="dlib-resnet", model_sha256="a" * 64, dim=DIM, metric="cosine")
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _unit(rng: np.random.Generator, n: int = 1) -> NDArray[np.float32]:
    return normalise(rng.standard_normal((n, DIM)).astype(np.float32))


def _near(v: NDArray[np.float32], rng: np.random.Generator, sigma: float = 0.02) -> NDArray[np.float32]:
    noisy: NDArray[np.float32] = (v + rng.standard_normal(v.shape) * sigma).astype(np.float32)
    out: NDArray[np.float32] = normalise(noisy[None, :])[0]
    return out


def _template(vec: NDArray[np.float32], tag: str = "img") -> NewTemplate:
    return NewTemplate(vector=vec, source_sha256=hashlib.sha256(tag.encode()).hexdigest(), quality=0.9)


def _subject(sid: str, expires_at: datetime | None = None) -> NewSubject:
    return NewSubject(
        subject_id=sid,
        display_name=f"Person {sid}",
        reason="warrant 123",
        legal_basis="court order",
        added_by="officer-7",
        expires_at=expires_at,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def wl(tmp_path: Path, rng: np.random.Generator) -> Iterator[tuple[Watchlist, dict[str, NDArray[np.float32]]]]:
    """A writable watchlist with 30 subjects, one template each; returns the vectors by id."""
    vectors: dict[str, NDArray[np.float32]] = {}
    with Watchlist.create(tmp_path / "wl", MODEL) as w:
        for i in range(30):
            sid = f"S{i:03d}"
            vectors[sid] = _unit(rng)[0]
            w.enroll(_subject(sid), [_template(vectors[sid], sid)], now=T0)
        yield w, vectors


def _counts(directory: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(directory / DB_FILE)
    try:
        return tuple(
            int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # type: ignore[return-value]
            for t in ("subjects", "templates", "audit")
        )
    finally:
        conn.close()


def test_create_enroll_search_finds_subject(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator
) -> None:
    w, vectors = wl
    assert len(w) == 30
    probe = _near(vectors["S007"], rng)
    [hits] = w.search(probe[None, :], k=3, now=T0)
    assert hits[0].subject_id == "S007" and hits[0].display_name == "Person S007"
    assert hits[0].distance < 0.05
    assert len(hits) == 3 and hits[0].distance <= hits[1].distance <= hits[2].distance
    s = next(s for s in w.subjects() if s.subject_id == "S007")
    assert s.n_templates == 1 and s.added_at == T0 and s.added_at.tzinfo is not None
    assert w.embedder == MODEL and len(w.index_version()) == 64


def test_multiple_templates_collapse_to_best(tmp_path: Path, rng: np.random.Generator) -> None:
    base = _unit(rng)[0]
    with Watchlist.create(tmp_path / "wl", MODEL) as w:
        subject = w.enroll(
            _subject("A"), [_template(_near(base, rng, 0.2), f"a{i}") for i in range(5)] + [_template(base, "best")]
        )
        assert subject.n_templates == 6
        for i in range(10):
            w.enroll(_subject(f"X{i}"), [_template(v, f"x{i}{j}") for j, v in enumerate(_unit(rng, 3))])
        [hits] = w.search(base[None, :], k=4)
        ids = [h.subject_id for h in hits]
        assert ids[0] == "A" and len(set(ids)) == len(ids) == 4
        assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
        assert hits[0].label == 5  # the "best" template's label


def test_remove_excludes_subject(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]]) -> None:
    w, vectors = wl
    ef_before = w._snap.index.ef_search  # white-box: removal must not reset the tuned ef
    w.remove("S007", removed_by="supervisor-2", reason="warrant withdrawn")
    assert w._snap.index.ef_search == ef_before
    [hits] = w.search(vectors["S007"][None, :], k=29)
    assert "S007" not in [h.subject_id for h in hits] and len(hits) == 29
    assert len(w) == 29 and "S007" not in [s.subject_id for s in w.subjects()]
    removed = next(s for s in w.subjects(include_removed=True) if s.subject_id == "S007")
    assert removed.removed_at is not None and removed.n_templates == 0
    with pytest.raises(WatchlistError, match="unknown subject"):
        w.remove("NOPE", removed_by="x", reason="y")
    with pytest.raises(WatchlistError, match="already removed"):
        w.remove("S007", removed_by="x", reason="y")
    with pytest.raises(WatchlistError, match="removed"):
        w.enroll(_subject("S007"), [_template(vectors["S007"])])
    conn = sqlite3.connect(w.directory / DB_FILE)
    try:  # the biometric vector is erased; the audit keeps who and why
        assert conn.execute("SELECT vector FROM templates WHERE subject_id='S007'").fetchone() == (None,)
        assert conn.execute("SELECT actor, detail FROM audit WHERE action='remove'").fetchone() == (
            "supervisor-2",
            "1 template(s); reason: warrant withdrawn",
        )
    finally:
        conn.close()
    assert w.verify() == []


def test_expiry_excludes_subject(tmp_path: Path, rng: np.random.Generator) -> None:
    v = _unit(rng, 2)
    with Watchlist.create(tmp_path / "wl", MODEL) as w:
        w.enroll(_subject("TEMP", expires_at=T0 + timedelta(days=30)), [_template(v[0])], now=T0)
        w.enroll(_subject("KEEP"), [_template(v[1])], now=T0)
        assert w.search(v[:1], k=1, now=T0 + timedelta(days=29))[0][0].subject_id == "TEMP"
        after = T0 + timedelta(days=30)  # expires_at <= now -> expired
        [hits] = w.search(v[:1], k=5, now=after)
        assert [h.subject_id for h in hits] == ["KEEP"]
        assert [s.subject_id for s in w.expired(after)] == ["TEMP"]
        assert w.expired(T0) == []
        with pytest.raises(EnrolmentError, match="future"):
            w.enroll(_subject("OLD", expires_at=T0), [_template(v[1])], now=T0)
        with pytest.raises(ValueError, match="naive"):
            w.search(v[:1], now=datetime(2025, 1, 1))  # naive on purpose


def test_duplicate_and_add_to_existing(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator
) -> None:
    w, _ = wl
    with pytest.raises(WatchlistError, match="already enrolled"):
        w.enroll(_subject("S001"), [_template(_unit(rng)[0])])
    extra = _unit(rng)[0]
    s = w.enroll(_subject("S001"), [_template(extra, "extra")], add_to_existing=True)
    assert s.n_templates == 2
    assert w.search(extra[None, :], k=1)[0][0].subject_id == "S001"
    with pytest.raises(WatchlistError, match="not enrolled"):
        w.enroll(_subject("NEW"), [_template(extra)], add_to_existing=True)


def test_reopen_with_other_model_refuses(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]]) -> None:
    w, _ = wl
    directory = w.directory
    w.close()
    other = EmbedderIdentity(kind="dlib-resnet", model_sha256="b" * 64, dim=DIM, metric="cosine")
    with pytest.raises(WatchlistError) as info:
        Watchlist.open(directory, other)
    assert str(info.value) == (
        f"watchlist {directory} was enrolled with dlib-resnet model aaaaaaaaaaaa, but the configured embedder "
        "is dlib-resnet bbbbbbbbbbbb; re-enrol the subjects with this model to switch"
    )
    with Watchlist.open(directory, MODEL) as again:
        assert len(again) == 30 and again.verify() == []


def test_corrupt_index_file_refused_on_open(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]]) -> None:
    w, _ = wl
    directory = w.directory
    w.close()
    path = directory / INDEX_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    for writable in (False, True):
        with pytest.raises(WatchlistError, match=r"checksum mismatch \(expected [0-9a-f]{12}…, found"):
            Watchlist.open(directory, MODEL, writable=writable)


def test_missing_index_file_refused(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]]) -> None:
    w, _ = wl
    directory = w.directory
    w.close()
    (directory / INDEX_FILE).unlink()
    with pytest.raises(WatchlistError, match=r"index file index\.hnsw is missing"):
        Watchlist.open(directory)
    (directory / DB_FILE).unlink()
    with pytest.raises(WatchlistError, match=r"has no watchlist\.sqlite: not a watchlist directory, or a damaged"):
        Watchlist.open(directory)
    with pytest.raises(WatchlistError, match="does not exist"):
        Watchlist.open(directory / "nope")


def test_garbage_database_refused(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]]) -> None:
    w, _ = wl
    directory = w.directory
    w.close()
    for name in (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"):
        (directory / name).unlink(missing_ok=True)
    (directory / DB_FILE).write_bytes(b"not a database" * 100)
    for writable in (False, True):
        with pytest.raises(WatchlistError, match="database unreadable"):
            Watchlist.open(directory, writable=writable)


def test_create_refuses_existing(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], tmp_path: Path) -> None:
    w, _ = wl
    with pytest.raises(WatchlistError, match="already exists"):
        Watchlist.create(w.directory, MODEL)
    empty = tmp_path / "empty"
    empty.mkdir()
    with Watchlist.create(empty, MODEL) as fresh:  # an empty directory (e.g. a mount point) is fine
        assert len(fresh) == 0 and fresh.search(np.zeros((2, DIM), np.float32)) == [[], []]


def test_verify_healthy_and_tampered_row(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator
) -> None:
    w, _ = wl
    assert w.verify() == []
    conn = sqlite3.connect(w.directory / DB_FILE)
    try:
        conn.execute("UPDATE templates SET vector = ? WHERE label = 4", (_unit(rng)[0].astype("<f4").tobytes(),))
        conn.execute("UPDATE templates SET vector = ? WHERE label = 9", (b"short",))
        conn.commit()
    finally:
        conn.close()
    problems = w.verify()
    assert any("template 4: database vector differs from the index" in p for p in problems), problems
    assert any("template 9 has a missing or malformed vector" in p for p in problems), problems


def test_verify_reports_index_file_and_db_inconsistencies(wl: tuple[Watchlist, dict[str, NDArray[np.float32]]]) -> None:
    w, _ = wl
    conn = sqlite3.connect(w.directory / DB_FILE)
    try:
        conn.execute("UPDATE subjects SET removed_at = '2025-02-01T00:00:00+00:00' WHERE subject_id = 'S003'")
        conn.execute("UPDATE templates SET deleted = 1 WHERE label = 5")
        conn.commit()
    finally:
        conn.close()
    with (w.directory / INDEX_FILE).open("ab") as fh:
        fh.write(b"x")
    problems = w.verify()
    assert any("checksum mismatch" in p for p in problems), problems
    assert any("template 3 belongs to a removed subject" in p for p in problems), problems
    assert any("label 5 is live in the index but not in the database" in p for p in problems), problems
    assert any("subject S005 has no live templates" in p for p in problems), problems
    assert any("index has 30 live templates, database 29" in p for p in problems), problems


@pytest.mark.parametrize("bad", ["wrong_dim", "not_unit", "nan", "bad_sha"])
def test_enroll_rejects_bad_template_without_changes(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator, bad: str
) -> None:
    w, _ = wl
    index_bytes = (w.directory / INDEX_FILE).read_bytes()
    counts = _counts(w.directory)
    good = [_template(v, str(i)) for i, v in enumerate(_unit(rng, 3))]
    broken = {
        "wrong_dim": _template(_unit(rng)[0][:64]),
        "not_unit": _template(_unit(rng)[0] * 3),
        "nan": _template(np.full(DIM, np.nan, np.float32)),
        "bad_sha": NewTemplate(vector=_unit(rng)[0], source_sha256="xyz", quality=0.5),
    }[bad]
    with pytest.raises(EnrolmentError, match="refused"):
        w.enroll(_subject("NEW"), [*good[:2], broken, good[2]])
    assert (w.directory / INDEX_FILE).read_bytes() == index_bytes
    assert _counts(w.directory) == counts
    assert len(w) == 30


def test_enroll_failing_midway_leaves_everything_unchanged(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, vectors = wl
    directory = w.directory
    index_bytes = (directory / INDEX_FILE).read_bytes()
    counts, version = _counts(directory), w.index_version()
    new = _unit(rng)[0]

    def failing_save(self: HnswIndex, path: Path) -> str:  # rows are already inserted by now
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(HnswIndex, "save", failing_save)
    with pytest.raises(WatchlistError, match="rolled back"):
        w.enroll(_subject("NEW"), [_template(new)])
    monkeypatch.undo()
    assert (directory / INDEX_FILE).read_bytes() == index_bytes
    assert _counts(directory) == counts and w.index_version() == version
    assert not (directory / PENDING_FILE).exists()
    # The in-memory state is untouched too, and the watchlist keeps working.
    assert w.search(new[None, :], k=1)[0][0].subject_id != "NEW"
    assert w.verify() == []
    w.enroll(_subject("NEW"), [_template(new)])
    assert w.search(new[None, :], k=1)[0][0].subject_id == "NEW"
    assert w.search(vectors["S002"][None, :], k=1)[0][0].subject_id == "S002"


def test_crash_between_commit_and_rename_is_finished_on_open(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator
) -> None:
    w, _ = wl
    directory = w.directory
    old_index = (directory / INDEX_FILE).read_bytes()
    new = _unit(rng)[0]
    w.enroll(_subject("NEW"), [_template(new)])
    w.close()
    # Simulate the crash: the commit landed, the rename did not.
    (directory / INDEX_FILE).replace(directory / PENDING_FILE)
    (directory / INDEX_FILE).write_bytes(old_index)
    with Watchlist.open(directory, MODEL) as reader:  # read-only: uses the pending file, changes nothing
        assert reader.search(new[None, :], k=1)[0][0].subject_id == "NEW"
    assert (directory / PENDING_FILE).exists()
    with Watchlist.open(directory, MODEL, writable=True) as writer:
        assert not (directory / PENDING_FILE).exists()
        assert writer.verify() == []
    # A stale pending file (crash before commit) and a save() temporary are cleaned up.
    (directory / PENDING_FILE).write_bytes(b"half-written")
    (directory / f".{PENDING_FILE}.123.abcd.tmp").write_bytes(b"half-written")
    with Watchlist.open(directory, MODEL, writable=True) as writer:
        assert len(writer) == 31
    assert sorted(p.name for p in directory.iterdir() if "index" in p.name) == [INDEX_FILE]


def test_compaction_keeps_search_results(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator
) -> None:
    w, vectors = wl
    for sid in ("S000", "S010", "S020"):
        w.remove(sid, removed_by="sup", reason="expired warrant")
    probes = np.stack([_near(v, rng, 0.05) for v in vectors.values()] + list(_unit(rng, 20)))
    before = w.search(probes, k=5)
    version = w.index_version()
    w.compact()
    assert w.index_version() != version
    assert w.search(probes, k=5) == before
    assert w.verify() == []
    directory = w.directory
    w.close()
    with Watchlist.open(directory, MODEL) as reopened:
        assert reopened.search(probes, k=5) == before
        assert len(reopened) == 27


def test_single_writer_and_read_only(
    wl: tuple[Watchlist, dict[str, NDArray[np.float32]]], rng: np.random.Generator
) -> None:
    w, _ = wl
    with pytest.raises(WatchlistError, match="already open for writing"):
        Watchlist.open(w.directory, writable=True)
    with Watchlist.open(w.directory) as reader:
        assert not reader.writable and reader.index_version() == w.index_version()
        with pytest.raises(WatchlistError, match="read-only"):
            reader.remove("S001", removed_by="x", reason="y")
        w.enroll(_subject("LATE"), [_template(_unit(rng)[0])])
        assert reader.index_version() == w.index_version()  # cheap poll sees the writer's change


def test_open_or_create_and_l2(tmp_path: Path, rng: np.random.Generator) -> None:
    l2 = EmbedderIdentity(kind="other", model_sha256="c" * 64, dim=DIM, metric="l2")
    v = rng.standard_normal((2, DIM)).astype(np.float32)
    with Watchlist.open_or_create(tmp_path / "l2", l2) as w:
        w.enroll(_subject("A"), [_template(v[0])])
    with Watchlist.open_or_create(tmp_path / "l2", l2) as w:
        [hits] = w.search(v[:1] + 0.1, k=2)
        assert hits[0].subject_id == "A"
        assert hits[0].distance == pytest.approx(0.1 * np.sqrt(DIM), rel=1e-4)  # Euclidean, not squared
        assert w.verify() == []


def test_reader_gets_consistent_snapshots_while_writer_enrols(tmp_path: Path) -> None:
    """Readers racing a writer's commit/rename must retry, never see a torn state."""
    directory = tmp_path / "wl"
    Watchlist.create(directory, MODEL).close()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        rng = np.random.default_rng(99)
        try:
            with Watchlist.open(directory, MODEL, writable=True) as w:
                for i in range(25):
                    w.enroll(_subject(f"W{i}"), [_template(v, f"w{i}{j}") for j, v in enumerate(_unit(rng, 2))])
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    opened = 0
    while not done.is_set() or opened == 0:
        with Watchlist.open(directory, MODEL) as r:
            snap = r._snap  # white-box: index and label map must come from the same commit
            assert len(snap.index) == len(snap.label_subject) == 2 * len(r)
            opened += 1
    thread.join()
    assert not errors, errors
    with Watchlist.open(directory, MODEL) as r:
        assert len(r) == 25 and r.verify() == []
