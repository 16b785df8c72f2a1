"""--keep-subject on real footage: the enrolled, authorised subject stays visible, every other face is hidden.

Lin-Manuel Miranda (enrolled from his face_recognition photos with the default embedder, as `watchlist enroll`
does) appears in the public Hamilton clip among other people. Who is who in each frame is decided here
independently of redaction: the live pipeline's analyzer (RetinaFace at native size, aligned, embedded)
compared with his templates, counting only confident faces far on either side of the threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from support import STREAMPROC, make_watchlist

from streamproc.config_recognition import RecognitionConfig
from streamproc.records.audit import AuditLog
from streamproc.runtime.build import build_analyzer
from streamproc.search.calibration import shipped_calibration
from streamproc.search.watchlist import Watchlist

pytestmark = [pytest.mark.shared, pytest.mark.slow]

SUBJECT = "lin_manuel_miranda"
AUTHORISATION = "court order 2026-117"
DARK = 40  # a solid-black box decodes to values below this after H.264
Box = tuple[int, int, int, int]


def frames(path: Path) -> list[NDArray[np.uint8]]:
    with av.open(str(path)) as c:
        return [np.asarray(f.to_ndarray(format="bgr24"), np.uint8) for f in c.decode(video=0)]


def black_share(original: NDArray[np.uint8], redacted: NDArray[np.uint8], box: Box) -> float | None:
    """Share of the box's pixels that are black in the output, judged on the pixels that are not already dark
    in the input; None when fewer than half are (a face in the dark cannot be told from a black box)."""
    x1, y1, x2, y2 = box
    judged = original[y1:y2, x1:x2].max(axis=2) >= DARK
    if judged.sum() < 0.5 * judged.size:
        return None
    black = redacted[y1:y2, x1:x2].max(axis=2) < DARK
    return float((black & judged).sum() / judged.sum())


def unchanged(original: NDArray[np.uint8], redacted: NDArray[np.uint8], box: Box) -> bool:
    """The box looks as in the input (only H.264's small differences): neither painted, blurred nor pixelated."""
    x1, y1, x2, y2 = box
    diff = np.abs(original[y1:y2, x1:x2].astype(np.int16) - redacted[y1:y2, x1:x2].astype(np.int16))
    return float(diff.mean()) < 8.0


@dataclass(frozen=True)
class Truth:
    """Per frame: the subject's face boxes and other people's face boxes (confident faces only)."""

    subject: list[list[Box]]
    others: list[list[Box]]


@pytest.fixture(scope="module")
def watchlist(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = make_watchlist(shared_dir, tmp_path_factory.mktemp("wl") / "consent", {SUBJECT: []})
    return directory


@pytest.fixture(scope="module")
def clip(shared_dir: Path) -> Path:
    return shared_dir / "data/video/face_recognition_short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def truth(clip: Path, watchlist: Path) -> Truth:
    analyzer = build_analyzer(RecognitionConfig())
    shipped = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
    assert shipped is not None
    threshold = shipped[0].threshold_for(1e-4).distance_threshold
    subject: list[list[Box]] = []
    others: list[list[Box]] = []
    with Watchlist.open(watchlist, analyzer.embedder.identity) as wl:
        for image in frames(clip):
            faces = [f for f in analyzer.faces(image) if f.detector_score >= 0.8 and f.box[2] - f.box[0] >= 24]
            hits = wl.search(analyzer.embed(faces), k=1) if faces else []
            mine: list[Box] = []
            theirs: list[Box] = []
            for face, found in zip(faces, hits, strict=True):
                h, w = image.shape[:2]
                x1, y1, x2, y2 = face.box
                box = (max(0, int(x1)), max(0, int(y1)), min(w, int(x2)), min(h, int(y2)))
                distance = found[0].distance if found else float("inf")
                if distance <= 0.8 * threshold:
                    mine.append(box)
                elif distance >= 1.6 * threshold:  # his profile close-ups score up to ~1.45x
                    theirs.append(box)
            subject.append(mine)
            others.append(theirs)
    return Truth(subject, others)


@pytest.fixture(scope="module")
def kept(clip: Path, watchlist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keep")
    done = subprocess.run(
        [
            STREAMPROC,
            "redact",
            str(clip),
            "--out",
            str(out / "release"),
            "--method",
            "box",
            "--keep-subject",
            SUBJECT,
            "--watchlist",
            str(watchlist),
            "--authorisation",
            AUTHORISATION,
            "--quiet",
            "--audit-dir",
            str(out / "audit"),
            "--operator",
            "pytest",
            "--reason",
            "release with the subject's consent",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_subject_stays_visible_and_everyone_else_is_hidden(clip: Path, truth: Truth, kept: Path) -> None:
    before = frames(clip)
    after = frames(kept / "release" / f"{clip.stem}.redacted.mp4")
    assert len(after) == len(before) == len(truth.subject)
    subject_frames = [t for t, boxes in enumerate(truth.subject) if boxes]
    judged = 0
    for t, boxes in enumerate(truth.others):
        for box in boxes:
            share = black_share(before[t], after[t], box)
            if share is not None:
                judged += 1
                assert share >= 0.9, f"frame {t}: another person's face {box} only {share:.0%} hidden"
    assert len(subject_frames) >= 20 and judged >= 20, (len(subject_frames), judged)  # the test has teeth
    visible = 0
    for t in subject_frames:
        x1, y1, x2, y2 = truth.subject[t][0]
        w, h = x2 - x1, y2 - y1
        core = (max(0, x1 + w // 4), max(0, y1 + h // 4), x2 - w // 4, y2 - h // 4)  # eyes, nose, mouth
        visible += unchanged(before[t], after[t], core)
    # His face is visible wherever his track was recognised; a frame may still be covered where another
    # person's padded region overlaps him or his track was lost, but most of the clip must show him.
    assert visible >= 0.8 * len(subject_frames), f"the subject is visible in {visible} of {len(subject_frames)}"


def test_the_report_and_the_audit_record_name_the_decision(clip: Path, kept: Path) -> None:
    report = json.loads((kept / "release" / f"{clip.stem}.redaction.json").read_text())
    decision = report["keep_subject"]
    assert decision["subject_id"] == SUBJECT and decision["authorisation"] == AUTHORISATION
    assert decision["tracks_kept"] and decision["tracks_compared"] > len(decision["tracks_kept"])
    assert report["settings"]["detection"]["detector"] == "retinaface"  # the calibrated detector, whatever the default
    records = [r for r in AuditLog.open(kept / "audit").records() if r.action == "redaction"]
    assert len(records) == 1
    record = records[0]
    assert record.subject_id == SUBJECT and record.actor == "pytest"
    assert record.details["keep_subject"] == decision
    assert record.details["output_sha256"] == report["output"]["sha256"]
    assert "embedding" not in json.dumps(report)
