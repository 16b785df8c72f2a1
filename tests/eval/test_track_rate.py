"""Per-track false-flag rate: policy-over-tracks counting, the rate arithmetic, the calibration file section."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streamproc.eval.intervals import clopper_pearson
from streamproc.eval.metrics import all_pairs_scores, threshold_at_fmr
from streamproc.eval.tracks import (
    TrackSet,
    crossfit_thresholds,
    independent_rate,
    make_tracks,
    person_fold,
    track_false_flags,
)
from streamproc.search.calibration import (
    Calibration,
    OperatingPoint,
    Threshold,
    TrackFalseFlags,
    TrackRow,
    load_calibration,
    predicted_false_alerts_per_hour,
    save_calibration,
)

# A 2-d gallery pool: g0 at the origin, the rest far away on a circle of radius 10.
POOL = np.array([[0.0, 0.0]] + [[10 * math.cos(a), 10 * math.sin(a)] for a in np.linspace(0, 3, 9)])
POOL_IDS = [f"g{i}" for i in range(len(POOL))]


def _tracks(*shot_sets: list[list[float]]) -> TrackSet:
    return TrackSet(np.array(shot_sets, dtype=np.float64), tuple(f"t{i}" for i in range(len(shot_sets))))


def test_tracks_close_to_one_gallery_person_all_flag() -> None:
    near = [[0.1, 0.0], [0.0, 0.2], [-0.1, 0.1]]  # every shot within 0.3 of g0
    rows = track_false_flags(_tracks(near, near, near), POOL, POOL_IDS, 0.3, "l2", k=2, n=3, gallery_sizes=[10])
    (row,) = rows
    assert (row.tracks, row.flagged, row.rate, row.shot_fpir) == (3, 3, 1.0, 1.0)
    assert row.independent_rate == 1.0 and row.upper95 == 1.0


def test_k_of_n_needs_k_shots_agreeing_on_one_subject() -> None:
    one_hit = [[0.1, 0.0], [5.0, 5.0], [-5.0, 5.0]]  # 1 of 3 under the threshold: not enough for 2-of-3
    split = [[0.1, 0.0], [9.9, 0.0], [5.0, -5.0]]  # 2 under, but on g0 and g1: no agreement
    far = [[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]
    rows = track_false_flags(_tracks(one_hit, split, far), POOL, POOL_IDS, 0.3, "l2", k=2, n=3, gallery_sizes=[10])
    (row,) = rows
    assert row.flagged == 0
    assert row.shot_fpir == pytest.approx(3 / 9)
    assert row.upper95 == clopper_pearson(0, 3)[1]
    assert row.independent_rate == pytest.approx(independent_rate(3 / 9, 2, 3))
    # The same shots at 1-of-3 flag the two tracks with any hit.
    assert track_false_flags(_tracks(one_hit, split, far), POOL, POOL_IDS, 0.3, "l2", 1, 3, [10])[0].flagged == 2


def test_gallery_draws_and_per_track_thresholds() -> None:
    near = [[0.1, 0.0], [0.0, 0.2], [-0.1, 0.1]]
    tracks = _tracks(*([near] * 200))
    # A gallery of 1 drawn from 10 holds g0 for about a tenth of the tracks; the full pool for all.
    small, full = track_false_flags(tracks, POOL, POOL_IDS, 0.3, "l2", 2, 3, [1, 10], seed=4)
    assert 5 <= small.flagged <= 40 and full.flagged == 200
    # Per-track thresholds: half the tracks judged at a threshold too strict for their shots.
    strict = np.where(np.arange(200) < 100, 0.3, 0.05)
    assert track_false_flags(tracks, POOL, POOL_IDS, strict, "l2", 2, 3, [10])[0].flagged == 100


def test_tracks_must_be_impostors_and_a_full_window() -> None:
    near = [[0.1, 0.0], [0.0, 0.2], [-0.1, 0.1]]
    own = TrackSet(np.array([near]), ("g0",))
    with pytest.raises(ValueError, match="impostors"):
        track_false_flags(own, POOL, POOL_IDS, 0.3, "l2", 2, 3, [10])
    with pytest.raises(ValueError, match="n=4"):
        track_false_flags(_tracks(near), POOL, POOL_IDS, 0.3, "l2", 2, 4, [10])
    with pytest.raises(ValueError, match="gallery size"):
        track_false_flags(_tracks(near), POOL, POOL_IDS, 0.3, "l2", 2, 3, [11])


def test_independent_rate() -> None:
    assert independent_rate(0.1, 2, 3) == pytest.approx(3 * 0.01 * 0.9 + 0.001)
    assert independent_rate(0.0, 2, 3) == 0.0 and independent_rate(1.0, 3, 3) == 1.0


def test_make_tracks_uses_each_photo_once() -> None:
    by_person = {"a": [np.full(2, float(i)) for i in range(7)], "b": [np.zeros(2)] * 2}
    tracks = make_tracks(by_person, n=3, seed=1, max_per_person=5)
    assert tracks.persons == ("a", "a")  # 7 photos: two disjoint runs of 3; b has too few
    used = tracks.shots[:, :, 0].ravel()
    assert len(set(used)) == 6
    assert make_tracks(by_person, 3, seed=1).persons == ("a",)
    with pytest.raises(ValueError, match="no person"):
        make_tracks({"b": [np.zeros(2)] * 2}, 3)


def test_crossfit_threshold_ignores_its_own_fold() -> None:
    rng = np.random.default_rng(0)
    persons = [f"p{i // 2}" for i in range(80)]
    emb = rng.normal(size=(80, 4))
    thresholds = crossfit_thresholds(emb, persons, 0.05, "l2", folds=2)
    for f, t in enumerate(thresholds):
        keep = [person_fold(p, 2) != f for p in persons]
        _, impostor = all_pairs_scores(emb[keep], [p for p, k in zip(persons, keep, strict=True) if k], "l2")
        assert t == -threshold_at_fmr(impostor, 0.05)


def _section(rows: list[tuple[int, int, int]]) -> TrackFalseFlags:
    return TrackFalseFlags(
        fmr_target=1e-3,
        distance_threshold=0.5,
        k=2,
        n=3,
        fold_thresholds=(0.49, 0.51),
        data="synthetic",
        rows=tuple(
            TrackRow(size, tracks, tracks, flagged, flagged / tracks, clopper_pearson(flagged, tracks)[1], 0.0, 0.0)
            for size, tracks, flagged in rows
        ),
    )


def _calibration(*sections: TrackFalseFlags) -> Calibration:
    point = OperatingPoint(1e-3, 0.5, 10, 10_000, 1.5e-3, 0.9, 100)
    return Calibration("dlib-resnet", "ab" * 32, "l2", "synthetic", "2026-11-26", "test", (point,), ("n",), sections)


def test_rate_interpolates_log_log_and_extrapolates_linearly() -> None:
    cal = _calibration(_section([(100, 1000, 10), (1000, 1000, 100)]))
    measured = cal.track_false_flag_rate(100, 2, 3, 1e-3)
    assert measured is not None and measured.method == "measured" and measured.rate == 0.01
    mid = cal.track_false_flag_rate(round(10**2.5), 2, 3, 1e-3)  # 316: halfway in log
    assert mid is not None and mid.method == "interpolated"
    assert mid.rate == pytest.approx(0.01 * 316 / 100)  # slope 1 in log-log between (100, 1%) and (1000, 10%)
    above = cal.track_false_flag_rate(2500, 2, 3, 1e-3)
    assert above is not None and above.method == "extrapolated" and above.rate == pytest.approx(0.25)
    below = cal.track_false_flag_rate(50, 2, 3, 1e-3)
    assert below is not None and below.rate == pytest.approx(0.005)
    assert cal.track_false_flag_rate(0, 2, 3, 1e-3) is not None
    capped = cal.track_false_flag_rate(100_000, 2, 3, 1e-3)
    assert capped is not None and capped.rate == 1.0 and capped.upper95 == 1.0
    # No measurement for another rule or operating point: unknown, not zero.
    assert cal.track_false_flag_rate(100, 3, 3, 1e-3) is None
    assert cal.track_false_flag_rate(100, 2, 3, 1e-4) is None
    with pytest.raises(ValueError):
        cal.track_false_flag_rate(-1, 2, 3, 1e-3)


def test_zero_flags_plan_with_the_upper_bound() -> None:
    cal = _calibration(_section([(100, 500, 0), (1000, 500, 5)]))
    rate = cal.track_false_flag_rate(100, 2, 3, 1e-3)
    assert rate is not None and rate.bound_used and rate.rate == clopper_pearson(0, 500)[1] > 0
    between = cal.track_false_flag_rate(300, 2, 3, 1e-3)
    assert between is not None and between.bound_used and between.rate > 0
    top = cal.track_false_flag_rate(1000, 2, 3, 1e-3)
    assert top is not None and not top.bound_used and top.rate == 0.01


def test_threshold_delegates_to_its_operating_point() -> None:
    cal = _calibration(_section([(100, 1000, 10)]))
    rate = Threshold(0.5, cal, "test", 1e-3).track_false_flag_rate(100, 2, 3)
    assert rate is not None and rate.rate == 0.01
    assert Threshold(0.5, None, "explicit", None).track_false_flag_rate(100, 2, 3) is None


def test_predicted_false_alerts_per_hour() -> None:
    assert predicted_false_alerts_per_hour(0.5, 0.01) == pytest.approx(18.0)  # 1,800 tracks/h x 1%
    assert predicted_false_alerts_per_hour(0.0, 0.5) == 0.0
    for bad in ((-1.0, 0.1), (1.0, 1.5), (math.nan, 0.1)):
        with pytest.raises(ValueError):
            predicted_false_alerts_per_hour(*bad)


def test_calibration_file_round_trip_with_and_without_tracks(tmp_path: Path) -> None:
    with_tracks = _calibration(_section([(100, 1000, 10), (1000, 1000, 100)]))
    without = replace(with_tracks, track_false_flags=())
    for i, cal in enumerate((with_tracks, without)):
        path = tmp_path / f"{i}.json"
        save_calibration(cal, path)
        assert load_calibration(path) == cal
    # A file written before the section existed has no key at all.
    old = tmp_path / "1.json"
    assert "track_false_flags" in old.read_text()  # empty list
    text = old.read_text().replace('"track_false_flags": [],', "").replace(',\n  "track_false_flags": []', "")
    old.write_text(text)
    assert "track_false_flags" not in old.read_text()
    assert load_calibration(old) == without


def test_shipped_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "streamproc" / "data" / "calibration" / "dlib-resnet-v1.json"
    cal = load_calibration(path)
    for section in cal.track_false_flags:
        assert any(abs(p.fmr_target - section.fmr_target) <= 1e-12 for p in cal.points)
        assert section.rows and all(r.tracks > 0 for r in section.rows)


def test_calibrate_cli_measures_tracks(shared_dir: Path, tmp_path: Path) -> None:
    from streamproc.cli.calibrate import calibrate_command

    source = shared_dir / "data" / "identity" / "lfw"
    persons = sorted(p for p in source.iterdir() if p.is_dir())
    multi = [p for p in persons if len(list(p.iterdir())) >= 3][:24]
    singles = [p for p in persons if len(list(p.iterdir())) == 1][:60]
    images = tmp_path / "images"
    images.mkdir()
    for person in multi + singles:
        (images / person.name).symlink_to(person, target_is_directory=True)
    app = typer.Typer()
    app.command("calibrate")(calibrate_command)
    app.command("unused")(lambda: None)
    out = tmp_path / "cal.json"
    args = ["calibrate", "--images", str(images), "--target-fmr", "1e-2", "--out", str(out)]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--tracks", "--track-gallery-sizes", "10,50,500"])
    assert result.exit_code == 0, result.output
    assert "left out" in result.output  # 500 > 60 single-photo persons
    cal = load_calibration(out)
    (section,) = cal.track_false_flags
    assert [r.gallery_size for r in section.rows] == [10, 50]
    assert all(r.tracks == 24 and r.persons == 24 for r in section.rows)
    assert len(section.fold_thresholds) == 2
    assert cal.track_false_flag_rate(30, 2, 3, cal.points[0].fmr_target) is not None
    # --tracks-only keeps the thresholds and replaces the section.
    again = runner.invoke(app, [*args[:3], "--out", str(out), "--tracks-only", "--track-gallery-sizes", "20"])
    assert again.exit_code == 0, again.output
    updated = load_calibration(out)
    assert updated.points == cal.points
    assert [r.gallery_size for r in updated.track_false_flags[0].rows] == [20]


def test_pairs_file_restricts_the_calibration_set(tmp_path: Path) -> None:
    from streamproc.cli.calibrate import _calibration_items
    from streamproc.errors import ConfigError

    for name, count in (("Ann", 3), ("Bob", 2)):
        (tmp_path / name).mkdir()
        for i in range(1, count + 1):
            (tmp_path / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2 1\nAnn 1 2\nAnn 1 Bob 1\nAnn 1 3\nAnn 2 Bob 2\n")
    items = _calibration_items(tmp_path, pairs)
    assert sorted(f"{p}/{f.name}" for p, f in items) == [
        "Ann/Ann_0001.jpg",
        "Ann/Ann_0002.jpg",
        "Ann/Ann_0003.jpg",
        "Bob/Bob_0001.jpg",
        "Bob/Bob_0002.jpg",
    ]
    pairs.write_text("2 1\nAnn 1 2\nAnn 1 Bob 1\nAnn 1 3\nAnn 2 Bob 7\n")
    with pytest.raises(ConfigError, match="only"):
        _calibration_items(tmp_path, pairs)
    assert len(_calibration_items(tmp_path, None)) == 5
