"""Faces that match nothing are never written anywhere.

One real run of `streamproc run` on the Hamilton clip with a journal and the audit log, watching for only
Lin-Manuel Miranda: the Obamas and the audience are bystanders. Afterwards everything the run could have
written is scanned. Positive control in the same run: the scan must find the stored evidence of the one
enrolled person who does match, so a scan that finds nothing at all would fail.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from support import STREAMPROC

from streamproc.config_recognition import RecognitionConfig
from streamproc.runtime.build import build_analyzer
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject
from streamproc.search.watchlist import Watchlist

pytestmark = pytest.mark.shared

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_B64 = base64.b64encode(JPEG_MAGIC).decode()  # "/9j/": how a JPEG starts inside JSON


def snapshot(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("workers", [0, 1], ids=["one-process", "supervised-processes"])
def test_only_the_enrolled_person_leaves_a_trace(shared_dir: Path, tmp_path: Path, workers: int) -> None:
    analyzer = build_analyzer(RecognitionConfig())
    watchlist = tmp_path / "watchlist"
    photos = sorted((shared_dir / "data/identity/face_recognition/lin_manuel_miranda").iterdir())
    with Watchlist.create(watchlist, analyzer.embedder.identity) as wl:
        wl.enroll(
            NewSubject("lin_manuel_miranda", "Lin-Manuel Miranda", "test", "test", "pytest"),
            templates_from_images(photos, analyzer, FaceChoice(largest=True)),
        )
    with sqlite3.connect(watchlist / "watchlist.sqlite") as db:
        templates_before = db.execute("SELECT count(*) FROM templates").fetchone()[0]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = run_dir / "run.yaml"
    config.write_text(
        f"sources:\n  - id: ham\n    url: {shared_dir / 'data/video/face_recognition_short_hamilton_clip.mp4'}\n"
        f"watchlist:\n  path: {watchlist}\n"
        "events:\n  endpoint: tcp://127.0.0.1:*\n  journal:\n    path: events.sqlite\nmetrics:\n  port: null\n"
        f"scale:\n  workers: {workers}\n  embed_endpoint: ipc://{tmp_path / 'chips.ipc'}\n"
    )
    scratch = tmp_path / "tmp"  # the supervisor's runtime files (config copy, metrics) go here, and must go away
    scratch.mkdir()
    before = snapshot(tmp_path)
    done = subprocess.run(
        [STREAMPROC, "run", str(config), "--quiet", "--operator", "pytest"],
        capture_output=True,
        text=True,
        cwd=run_dir,
        env={**os.environ, "COLUMNS": "200", "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    faces = int(done.stdout.split("frames, ", 1)[1].split(" faces", 1)[0])
    assert faces > 500  # the clip is full of faces that are not Miranda's

    # `.ses` (a timestamp and a random id, 51 bytes) is a marker a native dependency drops into TMPDIR; it is
    # still byte-scanned below. Everything streamproc put there must be gone.
    leftovers = [p for p in scratch.rglob("*") if p.name != ".ses"]
    assert not leftovers, f"runtime files left behind: {sorted(leftovers)}"
    written = {p for p, mtime in snapshot(tmp_path).items() if before.get(p) != mtime}
    assert all(p.stat().st_size < 100 for p in written if p.parent == scratch)
    allowed = {run_dir / "events.sqlite", watchlist / "audit.log", watchlist / "audit.key", scratch / ".ses"}
    sqlite_side_files = {p for p in written if p.name.endswith(("-wal", "-shm"))}
    assert written - sqlite_side_files <= allowed, f"unexpected files written: {sorted(written - allowed)}"

    # The journal holds the match events only: every one is Miranda's, each with its one face crop.
    with sqlite3.connect(run_dir / "events.sqlite") as db:
        bodies = [json.loads(row[0]) for row in db.execute("SELECT body FROM events")]
    assert bodies, "positive control: Miranda's match must be stored"
    assert {b["subject_id"] for b in bodies} == {"lin_manuel_miranda"}
    assert all(base64.b64decode(b["face_jpeg_b64"])[:3] == JPEG_MAGIC for b in bodies)

    # Byte scan of everything written: face images appear exactly once per stored match, nowhere else.
    jpegs = 0
    for path in written:
        data = path.read_bytes()
        jpegs += data.count(JPEG_MAGIC) + data.count(JPEG_B64.encode())
    assert jpegs == len(bodies), f"{jpegs} face images written for {len(bodies)} matches"

    # The audit log names only the enrolled subject; comparisons that matched nothing are counted, not listed.
    records = [json.loads(line) for line in (watchlist / "audit.log").read_text().splitlines()]
    flags = [r for r in records if r["action"] == "flag"]
    assert len(flags) == len(bodies) and {r["subject_id"] for r in flags} == {"lin_manuel_miranda"}
    assert all(r.get("subject_id") in (None, "lin_manuel_miranda") for r in records)
    assert max(len(line) for line in (watchlist / "audit.log").read_text().splitlines()) < 2000

    # No embedding of anyone was added to the watchlist, and stderr carries no per-face data.
    with sqlite3.connect(watchlist / "watchlist.sqlite") as db:
        assert db.execute("SELECT count(*) FROM templates").fetchone()[0] == templates_before
    assert JPEG_B64 not in done.stderr and JPEG_B64 not in done.stdout
