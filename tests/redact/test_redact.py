"""`streamproc redact` end to end on real video through PyAV and the real detectors, YuNet (the default) and
RetinaFace (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from redact_synth import BLURRED, SynthClip, face_crops, make_clip
from support import STREAMPROC

from streamproc.records.audit import AuditLog

pytestmark = pytest.mark.shared

DARK = 40  # a solid-black box decodes to values below this after H.264


def frames(path: Path) -> list[NDArray[np.uint8]]:
    with av.open(str(path)) as c:
        return [np.asarray(f.to_ndarray(format="bgr24"), np.uint8) for f in c.decode(video=0)]


def hidden_fraction(original: NDArray[np.uint8], redacted: NDArray[np.uint8], box: tuple[int, ...]) -> float:
    """Share of the box's pixels that are black in the output (pixels already dark in the input do not count)."""
    x1, y1, x2, y2 = box
    before = original[y1:y2, x1:x2].max(axis=2)
    after = redacted[y1:y2, x1:x2].max(axis=2)
    judged = before >= DARK
    return float(((after < DARK) & judged).sum() / max(1, judged.sum()))


def redact(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMPROC, "redact", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
def clip(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SynthClip:
    return make_clip(tmp_path_factory.mktemp("synth") / "synthetic.mp4", face_crops(shared_dir), audio=True)


@pytest.fixture(scope="module", params=["yunet", "retinaface"])
def redacted(clip: SynthClip, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    out = tmp_path_factory.mktemp("out")
    config = out / "redact.yaml"
    config.write_text(f"detection:\n  detector: {request.param}\n")
    done = redact(
        str(clip.path),
        "--config",
        str(config),
        "--out",
        str(out / "release"),
        "--method",
        "box",
        "--no-fallback-heads",  # so faces the detector misses entirely must be held by their track
        "--quiet",
        "--audit-dir",
        str(out / "audit"),
        "--operator",
        "pytest",
        "--reason",
        "records request 42",
    )
    assert done.returncode == 0, done.stderr
    return out


def test_every_known_face_is_hidden_in_every_frame(clip: SynthClip, redacted: Path) -> None:
    before = frames(clip.path)
    after = frames(redacted / "release/synthetic.redacted.mp4")
    assert len(after) == len(before) == len(clip.boxes)
    for t, boxes in enumerate(clip.boxes):
        for k, box in enumerate(boxes):
            share = hidden_fraction(before[t], after[t], box)
            assert share >= 0.9, f"frame {t} face {k}: only {share:.0%} hidden"
    # the control: outside the faces, the picture is untouched
    assert np.abs(after[0][:40, 250:350].astype(int) - before[0][:40, 250:350]).mean() < 4


def test_faces_the_detector_missed_are_held_by_the_track(clip: SynthClip, redacted: Path) -> None:
    report = json.loads((redacted / "release/synthetic.redaction.json").read_text())
    held = set(report["interpolation_only_frames"]["frames"])
    assert set(BLURRED[0]) <= held  # hidden there, but without a detection of its own
    assert report["faces"]["tracks"] >= 2
    assert report["keep_subject"] is None
    assert report["lowest_confidence_regions"]


def test_output_keeps_size_rate_timestamps_and_audio(clip: SynthClip, redacted: Path) -> None:
    out = redacted / "release/synthetic.redacted.mp4"
    with av.open(str(clip.path)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert (vb.width, vb.height, vb.average_rate) == (va.width, va.height, va.average_rate)
        assert vb.codec_context.name == "h264"
        assert [f.time for f in a.decode(va)] == [f.time for f in b.decode(vb)]
    with av.open(str(clip.path)) as a, av.open(str(out)) as b:
        sa = np.concatenate([f.to_ndarray() for f in a.decode(audio=0)], axis=1)
        sb = np.concatenate([f.to_ndarray() for f in b.decode(audio=0)], axis=1)
    assert sa.shape == sb.shape and sa.size > 40000
    assert np.array_equal(sa, sb)


def test_one_audit_record_and_a_report_with_hashes(clip: SynthClip, redacted: Path) -> None:
    from streamproc.fsutil import sha256_file

    records = [r for r in AuditLog.open(redacted / "audit").records() if r.action == "redaction"]
    assert len(records) == 1
    rec = records[0]
    assert rec.actor == "pytest" and rec.reason == "records request 42"
    assert rec.details["input_sha256"] == sha256_file(clip.path)
    assert rec.details["output_sha256"] == sha256_file(redacted / "release/synthetic.redacted.mp4")
    report = json.loads((redacted / "release/synthetic.redaction.json").read_text())
    assert report["input"]["sha256"] == rec.details["input_sha256"]
    assert report["output"]["frames"] == len(clip.boxes)
    assert (redacted / "release/synthetic.contact.png").read_bytes()[:4] == b"\x89PNG"


def test_truncated_input_is_one_line_error_and_no_output(clip: SynthClip, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = clip.path.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    done = redact(str(cut), "--out", str(tmp_path / "out"), "--quiet", "--audit-dir", str(tmp_path / "audit"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "cut.mp4" in lines[0], done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_keep_subject_without_authorisation_is_refused(clip: SynthClip, tmp_path: Path) -> None:
    done = redact(
        str(clip.path),
        "--out",
        str(tmp_path / "out"),
        "--keep-subject",
        "someone",
        "--watchlist",
        str(tmp_path / "wl"),
        "--audit-dir",
        str(tmp_path / "audit"),
    )
    assert done.returncode == 2
    assert "refused without --authorisation" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "audit").exists()


def test_no_face_data_or_temporary_files_are_left(clip: SynthClip, tmp_path: Path) -> None:
    """The bystander byte-scan applied to redaction: only the release files and the audit log are written."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "release"
    done = redact(
        str(clip.path),
        "--out",
        str(out),
        "--quiet",
        "--audit-dir",
        str(tmp_path / "audit"),
        env={"TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    leftovers = [p for p in scratch.rglob("*") if p.name != ".ses"]
    assert not leftovers, leftovers
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and scratch not in p.parents}
    assert written == {
        Path("release/synthetic.redacted.mp4"),
        Path("release/synthetic.redaction.json"),
        Path("release/synthetic.contact.png"),
        Path("audit/audit.log"),
        Path("audit/audit.key"),
    }
    for path in written - {Path("release/synthetic.contact.png")}:
        data = (tmp_path / path).read_bytes()
        assert b"\xff\xd8\xff" not in data and b"\x89PNG" not in data, path  # no face image anywhere
    report = json.loads((out / "synthetic.redaction.json").read_text())
    assert "embedding" not in json.dumps(report)


def test_report_counts_upscaled_frames(clip: SynthClip, redacted: Path) -> None:
    """Adaptive upscaling (the default) upscales some frames (at least the discovery cadence), not all."""
    report = json.loads((redacted / "release/synthetic.redaction.json").read_text())
    assert report["settings"]["detection"]["upscale"] == "adaptive"
    assert 0 < report["upscaled_frames"] < len(clip.boxes)
