"""The command line, run as a user runs it: real processes, real photos, real files.

Enrolment and search use ../shared/data/identity/face_recognition (6 persons, 18 photos).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import cv2
import pytest
from skimage import data
from support import STREAMPROC

from streamproc.vision.imageio import read_image

WHO = ("--operator", "officer-1", "--reason", "case 2026/42")

pytestmark = pytest.mark.shared


def run(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([STREAMPROC, *map(str, args)], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr}")
    return done


def person(shared_dir: Path, name: str) -> list[Path]:
    return sorted((shared_dir / "data/identity/face_recognition" / name).iterdir())


def enroll(wl: Path, subject: str, images: list[Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return run(
        "watchlist",
        "enroll",
        "--watchlist",
        wl,
        "--subject-id",
        subject,
        "--name",
        subject.title(),
        "--reason",
        "test case",
        "--operator",
        "officer-1",
        "--legal-basis",
        "warrant 42",
        *extra,
        *images,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert fragment in done.stderr, done.stderr


@pytest.fixture(scope="module")
def watchlist(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    wl = tmp_path_factory.mktemp("wl") / "watchlist"
    obama = person(shared_dir, "barack_obama")
    for subject in ("barack_obama", "lin_manuel_miranda"):
        photos = person(shared_dir, subject)
        chosen = photos[:-1] if subject == "barack_obama" else photos
        done = enroll(wl, subject, chosen, "--largest")
        assert done.returncode == 0, done.stderr
    assert obama[-1].exists()
    return wl


def test_identify_finds_the_enrolled_person_first(shared_dir: Path, watchlist: Path) -> None:
    probe = person(shared_dir, "barack_obama")[-1]  # not enrolled: held back above
    done = run("identify", "--watchlist", watchlist, *WHO, probe, check=True)
    first = next(line for line in done.stdout.splitlines() if line.strip().startswith("1."))
    assert "barack_obama" in first
    assert "human review" in done.stdout


def test_list_and_verify(watchlist: Path) -> None:
    listed = run("watchlist", "list", "--watchlist", watchlist, check=True)
    assert "barack_obama" in listed.stdout and "warrant 42" in listed.stdout
    verified = run("watchlist", "verify", "--watchlist", watchlist, check=True)
    assert "OK" in verified.stdout
    # every enrolment and search so far is in the tamper-evident audit log, and the chain verifies
    audited = run("audit", "verify", "--watchlist", watchlist, check=True)
    assert "OK" in audited.stdout
    shown = run("audit", "show", "--watchlist", watchlist, check=True).stdout
    assert "enrol" in shown and "barack_obama" in shown and "officer-1" in shown


def test_verify_reports_tampering(shared_dir: Path, tmp_path: Path) -> None:
    wl = tmp_path / "wl"
    assert enroll(wl, "rose", person(shared_dir, "rose_leslie")[:1], "--largest").returncode == 0
    with sqlite3.connect(wl / "watchlist.sqlite") as db:
        db.execute("UPDATE templates SET vector = zeroblob(length(vector))")
    done = run("watchlist", "verify", "--watchlist", wl)
    assert done.returncode == 1 and "problem" in done.stderr


def test_enrolment_refusals_write_nothing(shared_dir: Path, tmp_path: Path) -> None:
    wl = tmp_path / "wl"
    good = person(shared_dir, "rose_leslie")[0]
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert_one_line_error(enroll(wl, "x", [good, text], "--largest"), "cannot decode image")
    assert not wl.exists(), "a refused enrolment must not create the watchlist"

    no_face = tmp_path / "coffee.png"
    cv2.imwrite(str(no_face), data.coffee()[:, :, ::-1])
    assert_one_line_error(enroll(wl, "x", [good, no_face], "--largest"), "no face found")

    group = shared_dir / "data/identity/_multi_face_scenes/face_recognition__two_people.jpg"
    assert_one_line_error(enroll(wl, "x", [group]), "2 faces found")
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), cv2.resize(read_image(good), None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA))
    done = enroll(wl, "x", [tiny], "--largest")
    assert done.returncode == 2 and ("quality gate" in done.stderr or "no face" in done.stderr)
    assert not wl.exists()

    assert enroll(wl, "x", [group], "--face", "0").returncode == 0  # an explicit choice is accepted
    assert_one_line_error(enroll(wl, "x", [good], "--largest"), "already enrolled")
    assert_one_line_error(enroll(wl, "y", [good], "--expires", "2001-01-01"), "in the past")


def test_remove_stops_matching(shared_dir: Path, tmp_path: Path) -> None:
    wl = tmp_path / "wl"
    photos = person(shared_dir, "kit_harington")
    assert enroll(wl, "kit", photos[1:2], "--largest").returncode == 0
    assert "1. kit" in run("identify", "--watchlist", wl, *WHO, photos[2], check=True).stdout
    run("watchlist", "remove", "--watchlist", wl, "--subject-id", "kit", "--operator", "o", "--reason", "r", check=True)
    after = run("identify", "--watchlist", wl, *WHO, photos[2], check=True)
    assert "1. kit" not in after.stdout
    assert_one_line_error(
        run("watchlist", "remove", "--watchlist", wl, "--subject-id", "nobody", "--operator", "o", "--reason", "r"),
        "nobody",
    )


def test_another_embedder_is_refused(shared_dir: Path, watchlist: Path) -> None:
    model = shared_dir / "models/mobilefacenet192_expo.onnx"
    probe = person(shared_dir, "barack_obama")[-1]
    done = run("identify", "--watchlist", watchlist, *WHO, "--embedder", "arcface", "--embedder-model", model, probe)
    assert_one_line_error(done, "re-enrol")


def test_bad_config_is_one_line_with_the_key_path(tmp_path: Path, watchlist: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("detector:\n  score_treshold: 0.5\n")
    done = run("identify", "--watchlist", watchlist, *WHO, "--config", cfg, tmp_path)
    assert_one_line_error(done, "detector.score_treshold")
    assert_one_line_error(run("watchlist", "list", "--watchlist", tmp_path / "missing"), "missing")


def test_demo_runs_the_pipeline_offline(tmp_path: Path) -> None:
    done = run("demo", "--workdir", tmp_path, check=True)
    assert "candidate=demo-astronaut" in done.stdout and "review=pending" in done.stdout
    assert 'streamproc_events_published_total{stream="demo"} 1.0' in done.stdout
    # the kept assets run again with `streamproc run` (ports from the demo config, metrics off here)
    again = run("run", tmp_path / "demo.yaml", "--events", "tcp://127.0.0.1:*", "--metrics-port", "0", "-q")
    assert again.returncode == 0, again.stderr
    assert "1 match event(s)" in again.stdout


def test_unwritable_report_path_is_one_line(shared_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory is needed")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2 1\n" + "Aaron_Sorkin 1 2\nAaron_Sorkin 1 Abbas_Kiarostami 1\n" * 2)
    done = run(
        "evaluate",
        "verification",
        "--pairs",
        pairs,
        "--images",
        shared_dir / "data/identity/lfw",
        "--report",
        blocker / "report",
        "--no-cache",
        "--no-all-pairs",
    )
    assert_one_line_error(done, str(blocker))


def test_expired_subjects_are_purged_and_audited(shared_dir: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from streamproc.records.audit import AuditLog
    from streamproc.search.governance import purge_expired
    from streamproc.search.watchlist import Watchlist

    wl = tmp_path / "wl"
    soon = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()  # the enrol command must start before it
    assert enroll(wl, "rose", person(shared_dir, "rose_leslie")[:1], "--largest", "--expires", soon).returncode == 0
    with Watchlist.open(wl, writable=True) as opened:
        assert purge_expired(opened, AuditLog.open(wl)) == []  # not yet
        later = datetime.now(UTC) + timedelta(seconds=121)
        assert [s.subject_id for s in purge_expired(opened, AuditLog.open(wl), now=later)] == ["rose"]
        assert len(opened) == 0
    shown = run("audit", "show", "--watchlist", wl, check=True).stdout
    assert "expire" in shown and "rose" in shown
    assert "0 expired subject(s) purged" in run("watchlist", "purge-expired", "--watchlist", wl, check=True).stdout


def test_enrolling_a_second_id_for_the_same_face_is_refused(shared_dir: Path, tmp_path: Path) -> None:
    wl = tmp_path / "wl"
    photos = person(shared_dir, "kit_harington")
    assert enroll(wl, "kit", photos[1:2], "--largest").returncode == 0
    done = enroll(wl, "jon_snow", photos[2:3], "--largest")
    assert_one_line_error(done, "within the match threshold of subject kit")
    listed = run("watchlist", "list", "--watchlist", wl, check=True).stdout
    assert "jon_snow" not in listed
