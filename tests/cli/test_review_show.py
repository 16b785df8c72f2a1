"""`streamproc review show` prints rounded numbers (issue 11, defect 11): a real journal, the real command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support import STREAMPROC, free_port, make_event

from streamproc.feed.journal import EventJournal
from streamproc.feed.schema import CalibrationInfo, QualityInfo


def test_show_prints_no_unrounded_float(tmp_path: Path) -> None:
    event = make_event(
        distance=0.412345678901,
        distances=[0.45678901234, 0.412345678901],
        threshold=0.5012345678,
        frame_pts_s=12.345678901,
        calibration=CalibrationInfo(
            fmr_target=0.00123456789, source="sface-v1.json", uncalibrated=False, fpir=0.0123456789
        ),
        quality=QualityInfo(
            score=0.7123456, face_px=80.123456, sharpness=240.98765, yaw=0.0512345678, detector_score=0.98765
        ),
        box=(100.123456, 80.98765, 180.5555555, 180.4444444),
    )
    with EventJournal(tmp_path / "journal.sqlite") as journal:
        journal.append(event)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"sources:\n  - id: cam1\n    url: {tmp_path / 'clip.mp4'}\nwatchlist:\n  path: {tmp_path / 'wl'}\n"
        f"events:\n  endpoint: tcp://127.0.0.1:{free_port()}\n  journal: {{path: {tmp_path / 'journal.sqlite'}}}\n"
    )
    done = subprocess.run(
        [STREAMPROC, "review", "show", event.event_id[:12], "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "yaw=0.05 " in done.stdout and "fmr_target=0.00123 " in done.stdout, done.stdout
    assert "distance 0.4123 " in done.stdout and "frame 12.346 s" in done.stdout, done.stdout
    assert not re.search(r"\d\.\d{6,}", done.stdout), done.stdout  # no float printed with 6+ decimals
