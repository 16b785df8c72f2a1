"""``streamproc calibrate`` and the open-set bench: FPIR threshold maths, set disjointness, the CLI end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streamproc.cli.calibrate import calibrate_command
from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.openset import (
    fpir_point,
    min_searches,
    nonmated_top1,
    split_open_set,
    sufficiency_message,
    threshold_at_tar,
)


def test_fpir_threshold_allows_floor_target_times_n() -> None:
    # 1,000 searches at target 1e-2: 10 may reach the threshold; the 11th best (0.989) must not.
    top1 = -np.arange(1000, dtype=np.float64) / 1000.0  # 0, -0.001, ..., -0.999
    point = fpir_point(top1, 1e-2)
    assert point.false_alarms == 10
    assert -0.010 < point.threshold <= np.nextafter(-0.010, 1.0)
    assert point.fpir_upper95 == clopper_pearson(10, 1000)[1]
    assert not point.demonstrated  # 10/1000 is the target itself; the bound is above it


def test_fpir_bound_says_plainly_when_too_few_searches() -> None:
    point = fpir_point(np.linspace(-1.0, 0.0, 500), 1e-3)  # floor(0.5) = 0: nothing may pass
    assert point.false_alarms == 0
    assert point.fpir_upper95 == pytest.approx(1.0 - 0.025 ** (1 / 500))  # ~0.7%
    assert "NOT DEMONSTRATED" in sufficiency_message(point)
    assert str(min_searches(1e-3)) in sufficiency_message(point)
    assert min_searches(1e-3) == math.ceil(math.log(0.025) / math.log(1 - 1e-3))  # 3688
    ok = fpir_point(np.linspace(-1.0, 0.0, 4000), 1e-3)  # 4 may pass; 0-4 of 4,000 can support 1e-3
    assert ok.false_alarms == 4
    assert ok.demonstrated == (clopper_pearson(4, 4000)[1] <= 1e-3)


def test_nonmated_top1_never_draws_own_person() -> None:
    # Two persons far apart, each image identical to its mates: own-person scores would be 0 (l2), others -10.
    emb = np.array([[0.0], [0.0], [10.0], [10.0], [10.0]])
    persons = ["a", "a", "b", "b", "b"]
    top1, replaced = nonmated_top1(emb, persons, gallery_size=3, metric="l2", seed=1)
    assert replaced  # one other person, gallery of 3: drawn with replacement
    np.testing.assert_allclose(top1, -10.0)
    again, _ = nonmated_top1(emb, persons, gallery_size=3, metric="l2", seed=1)
    np.testing.assert_array_equal(top1, again)


def test_nonmated_top1_gallery_of_one_person_each() -> None:
    # Persons p0..p9 at positions 0..9 (1-d); the probe at 0 against a gallery of all 9 others has top-1 -1.
    emb = np.arange(10, dtype=np.float64)[:, None]
    top1, replaced = nonmated_top1(emb, [f"p{i}" for i in range(10)], gallery_size=9, metric="l2", seed=0)
    assert not replaced
    np.testing.assert_allclose(top1, -1.0)


def test_threshold_at_tar() -> None:
    correct = np.array([True, True, True, False, True])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.6])
    assert threshold_at_tar(correct, scores, 0.6) == 0.7  # 3 of 5 correct at >= 0.7
    assert threshold_at_tar(correct, scores, 0.8) == 0.6
    assert threshold_at_tar(correct, scores, 0.9) is None  # only 4 of 5 correct at all


def _tree(root: Path) -> tuple[Path, Path]:
    lfw, utk = root / "lfw", root / "utk"
    for i in range(40):
        person = lfw / f"multi_{i:02d}"
        person.mkdir(parents=True)
        for j in range(1 + i % 4 + 1):
            (person / f"multi_{i:02d}_{j:04d}.jpg").write_bytes(f"m{i}-{j}".encode())
    for i in range(60):
        (lfw / f"single_{i:02d}").mkdir()
        (lfw / f"single_{i:02d}" / f"single_{i:02d}_0001.jpg").write_bytes(f"s{i}".encode())
    utk.mkdir()
    for i in range(80):
        (utk / f"{i}_0_0_x.jpg.chip.jpg").write_bytes(f"u{i}".encode())
    (utk / "dup.jpg.chip.jpg").write_bytes(b"u0")  # byte duplicate of face 0: must not be a second person
    return lfw, utk


def test_bench_split_is_person_disjoint(tmp_path: Path) -> None:
    lfw, utk = _tree(tmp_path)
    split = split_open_set(lfw, utk, seed=3, gallery_size=100, n_enrolled=20)
    calib = {p for p, _ in split.calibration}
    gallery = {p for p, _ in split.gallery}
    enrolled = {p for p, _ in split.enrolled_probes}
    nonenrolled = {p for p, _ in split.nonenrolled_probes}
    assert len(split.gallery) == len(gallery) == 100  # one photo per gallery person
    assert len(enrolled) == 20 and enrolled <= gallery
    assert not calib & gallery and not calib & nonenrolled and not gallery & nonenrolled
    assert {f for _, f in split.gallery}.isdisjoint(f for _, f in split.enrolled_probes)
    assert all(p.startswith("lfw:") for p in enrolled)
    assert any(p.startswith("utk:") for p in gallery) and any(p.startswith("utk:") for p in calib)
    all_files = [f for s in (split.calibration, split.gallery, split.nonenrolled_probes) for _, f in s]
    assert len({f.read_bytes() for f in all_files if f.parent == utk}) == len([f for f in all_files if f.parent == utk])
    # Every person is used once: 40 multi + 60 single + 80 distinct faces.
    assert len(calib) + len(gallery) + len(nonenrolled) == 180
    assert split == split_open_set(lfw, utk, seed=3, gallery_size=100, n_enrolled=20)


def test_calibrate_cli_writes_a_loadable_file(shared_dir: Path, tmp_path: Path) -> None:
    from streamproc.search.calibration import load_calibration

    source = shared_dir / "data" / "identity" / "lfw"
    persons = sorted(p for p in source.iterdir() if p.is_dir())
    multi = [p for p in persons if len(list(p.iterdir())) >= 2][:20]
    chosen = multi + [p for p in persons if p not in multi][:40]
    images = tmp_path / "images"
    images.mkdir()
    for person in chosen:
        (images / person.name).symlink_to(person, target_is_directory=True)
    app = typer.Typer()
    app.command("calibrate")(calibrate_command)
    app.command("unused")(lambda: None)  # two commands: the name "calibrate" is then required, as when mounted
    runner = CliRunner()
    out = tmp_path / "cal.json"
    args = ["calibrate", "--images", str(images), "--gallery-size", "50", "--target-fpir", "0.01", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "NOT DEMONSTRATED" in result.output  # ~100 searches cannot show FPIR 1%
    assert "target_fmr:" in result.output
    cal = load_calibration(out)
    (point,) = cal.points
    assert point.distance_threshold > 0 and point.n_impostor > 0
    assert any("gallery_size=50" in note for note in cal.notes)
    yaml_value = next(line for line in result.output.splitlines() if "target_fmr:" in line).split(":")[1]
    assert cal.threshold_for(float(yaml_value)) == point

    both = runner.invoke(app, [*args, "--target-fmr", "1e-3"])
    assert both.exit_code != 0
    fmr = runner.invoke(app, ["calibrate", "--images", str(images), "--target-fmr", "1e-3", "--out", str(out)])
    assert fmr.exit_code == 0, fmr.output
    assert load_calibration(out).threshold_for(1e-3).impostor_accepted <= load_calibration(out).points[0].n_impostor
