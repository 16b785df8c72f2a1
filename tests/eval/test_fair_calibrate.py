"""``streamproc calibrate --fair-faces`` writes a map the demographics command then measures (real faces)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamproc.cli.calibrate import calibrate_command
from streamproc.search.calibration import load_calibration


@pytest.mark.shared
def test_calibrate_fits_a_fair_map_into_the_file(shared_dir: Path, tmp_path: Path) -> None:
    lfw = shared_dir / "data" / "identity" / "lfw"
    images = tmp_path / "lfw"
    images.mkdir()
    for person in sorted(p for p in lfw.iterdir() if p.is_dir())[:120]:
        (images / person.name).symlink_to(person, target_is_directory=True)
    faces = tmp_path / "faces"
    faces.mkdir()
    for f in sorted((shared_dir / "data" / "demographic" / "utkface").iterdir())[:100]:
        (faces / f.name).symlink_to(f)
    app = typer.Typer()
    app.command("calibrate")(calibrate_command)
    app.command("unused")(lambda: None)
    out = tmp_path / "cal.json"
    args = ["calibrate", "--images", str(images), "--target-fmr", "1e-2", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--fair-faces", str(faces)])
    assert result.exit_code == 0, result.output
    fitted = re.search(
        r"fair score map fitted: (\d+) of (\d+) calibration faces \(at most 2 per person\) and "
        r"\d+ of 100 distinct images.*; 8 partitions, seeds 0-7",
        result.output,
    )
    assert fitted and int(fitted[1]) < int(fitted[2])  # LFW persons with more than 2 photos were capped
    cal = load_calibration(out)
    assert cal.fair_map is not None and cal.fair_map.n_clusters == 16 and cal.fair_map.n_members == 8
    assert any(note.startswith("fair_map:") for note in cal.notes)
    missing = CliRunner().invoke(app, [*args, "--fair-faces", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "not a folder" in str(missing.exception or missing.output)
