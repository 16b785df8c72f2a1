"""FMR by demographic group: the pair counting and ratio maths on toy data, then the command on real labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streamproc.cli.evaluate import _gate, demographics_command
from streamproc.eval.demographics import (
    FmrRatio,
    LabelsError,
    binomial_rate,
    count_pairs,
    fmr_ratio,
    format_ratio,
    read_labels,
)

HEADLINE = re.compile(r"^max_min_fmr_ratio=(\d+\.\d{3}|not_estimable) groups=(\d+) worst_group_fmr_x=\d+\.\d{3}$")


def _vectors(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=np.float32)


# ------------------------------------------------------------------------------------------- pair counting


def test_count_pairs_counts_impostors_and_reports_near_duplicates() -> None:
    # a, b identical (near-duplicate); c at distance 0.5 from a (a false match at 0.6); d far from all.
    emb = _vectors((0, 0), (0, 0), (0.5, 0), (10, 0))
    files = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    counts = count_pairs(files, files, emb, "l2", threshold=0.6, near_duplicate_distance=0.12)
    assert (counts.fmr.errors, counts.fmr.trials) == (3, 6)  # a-b, a-c, b-c
    assert [(d.left, d.right, d.distance) for d in counts.near_duplicates] == [("a.jpg", "b.jpg", 0.0)]
    assert (counts.fmr_without_near_duplicates.errors, counts.fmr_without_near_duplicates.trials) == (2, 5)
    assert counts.fnmr.trials == 0


def test_count_pairs_mated_pairs_give_fnmr() -> None:
    emb = _vectors((0, 0), (0.3, 0), (2, 0), (5, 0), (5.1, 0))
    persons = ["p", "p", "p", "q", "q"]
    counts = count_pairs(["1", "2", "3", "4", "5"], persons, emb, "l2", 0.6, 0.01)
    # mated: p1-p2 (0.3 ok), p1-p3 (2 miss), p2-p3 (1.7 miss), q4-q5 (0.1 ok)
    assert (counts.fnmr.errors, counts.fnmr.trials) == (2, 4)
    assert (counts.fmr.errors, counts.fmr.trials) == (0, 6)
    assert counts.fmr.lower == 0.0 and 0 < counts.fmr.upper < 1


def test_count_pairs_cosine_distance_and_tiny_groups() -> None:
    emb = _vectors((1, 0), (1, 0.1), (0, 1))
    counts = count_pairs(["x", "y", "z"], ["x", "y", "z"], emb, "cosine", 0.01, 0.001)
    assert counts.fmr.errors == 1 and counts.fmr.trials == 3  # 1 - cos(x, y) ~ 0.005
    single = count_pairs(["x"], ["x"], emb[:1], "l2", 0.5, 0.1)
    assert single.fmr.trials == 0 and single.fmr.point is None


# ------------------------------------------------------------------------------------------- the ratio


def test_ratio_point_when_every_group_has_false_matches() -> None:
    rates = [binomial_rate(10, 1000), binomial_rate(40, 1000), binomial_rate(20, 1000)]
    ratio = fmr_ratio(["a", "b", "c"], rates)
    assert ratio.estimable and ratio.point == pytest.approx(4.0)
    assert ratio.bound == pytest.approx(rates[1].upper / rates[0].lower)
    assert ratio.bound is not None and ratio.point is not None and ratio.bound > ratio.point
    assert ratio.gate_value == ratio.point and ratio.n_groups == 3 and ratio.zero_groups == ()
    assert format_ratio(ratio).startswith("4.000")


def test_ratio_with_a_zero_group_is_not_estimable_but_bounded() -> None:
    rates = [binomial_rate(0, 1000), binomial_rate(5, 1000), binomial_rate(9, 1000), binomial_rate(0, 0)]
    ratio = fmr_ratio(["zero", "five", "nine", "empty"], rates)
    assert not ratio.estimable and ratio.point is None
    assert ratio.n_groups == 3 and ratio.zero_groups == ("zero",)
    # numerator: the largest upper limit of any group (the zero group's included); denominator: nonzero only
    assert ratio.bound == pytest.approx(max(r.upper for r in rates[:3]) / rates[1].lower)
    assert ratio.gate_value == ratio.bound
    text = format_ratio(ratio)
    assert "not estimable" in text and "zero" in text and "inf" not in text


def test_ratio_without_any_false_match_has_no_value() -> None:
    ratio = fmr_ratio(["a", "b"], [binomial_rate(0, 100), binomial_rate(0, 50)])
    assert ratio == FmrRatio(point=None, bound=None, n_groups=2, zero_groups=("a", "b"))
    assert ratio.gate_value is None and "no group has a false match" in format_ratio(ratio)


def test_gate_uses_the_point_ratio_else_the_bound_and_fails_closed() -> None:
    estimable = fmr_ratio(["a", "b"], [binomial_rate(10, 1000), binomial_rate(30, 1000)])
    assert _gate(estimable, 3.5, "") is None
    assert "max/min FMR ratio 3.000 exceeds --max-ratio 2" in str(_gate(estimable, 2.0, ""))
    bounded = fmr_ratio(["a", "b"], [binomial_rate(0, 1000), binomial_rate(30, 1000)])
    message = _gate(bounded, 2.0, "")
    assert message is not None and "interval-based bound (point ratio not estimable)" in message
    assert bounded.bound is not None and _gate(bounded, bounded.bound * 1.01, "") is None
    nothing = fmr_ratio(["a"], [binomial_rate(0, 1000)])
    assert "failing closed" in str(_gate(nothing, 1e9, "x"))


# ------------------------------------------------------------------------------------------- labels


def test_read_labels_drops_byte_duplicates_and_uses_lfw_folders(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "file,age,sex,race,source,sha1_dup\n"
        "utkface/a.jpg,20,male,black,u,0\n"
        "utkface/b.jpg,20,male,black,u,1\n"
        "../identity/lfw/Jo_Doe/Jo_Doe_0001.jpg,,female,,lfw,0\n"
    )
    rows, n_rows, dropped = read_labels(csv_path)
    assert (n_rows, dropped) == (3, 1)
    assert [(r.group, r.source, r.person) for r in rows] == [
        ("black/male", "utkface", "utkface/a.jpg"),
        ("lfw:unlabelled/female", "lfw", "Jo_Doe"),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,race\nx.jpg,white\n")
    with pytest.raises(LabelsError, match="missing column"):
        read_labels(bad)


# ------------------------------------------------------------------------------------------- real data


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("demographics")(demographics_command)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps "demographics" a subcommand name
        """Unused."""

    return app


@pytest.mark.shared
def test_demographics_command_on_real_labels(shared_dir: Path, tmp_path: Path) -> None:
    labels = shared_dir / "data/demographic/labels.csv"
    report = tmp_path / "report"
    runner = CliRunner()
    done = runner.invoke(_app(), ["demographics", "--labels", str(labels), "--report", str(report)])
    assert done.exit_code == 0, (done.output, done.exception)
    lines = done.stdout.strip().splitlines()
    match = HEADLINE.match(lines[-1])
    assert match is not None, lines[-1]
    assert match.group(2) == "10"
    assert "shipped calibration" in done.stdout and "byte duplicate(s) dropped" in done.stdout

    data = json.loads((report / "report.json").read_text())
    assert len(data["groups"]) == 10 and data["n_byte_duplicates_dropped"] > 0
    for group in data["groups"]:
        fmr = group["pairs"]["fmr"]
        assert fmr["trials"] > 10_000  # ~250 images -> ~31k impostor pairs
        assert fmr["lower"] <= fmr["point"] <= fmr["upper"]
        assert group["failed_to_detect"]["trials"] == group["n_images"]
    assert any(g["fnmr_reported"] for g in data["lfw_groups"])
    assert (report / "fmr_by_group.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "too few mated pairs" in (report / "report.md").read_text()

    # the gate, on the now-cached embeddings
    strict = runner.invoke(_app(), ["demographics", "--labels", str(labels), "--max-ratio", "1.0"])
    assert strict.exit_code == 1
    assert strict.stderr.strip().count("\n") == 0 and "exceeds --max-ratio 1" in strict.stderr
    lenient = runner.invoke(_app(), ["demographics", "--labels", str(labels), "--max-ratio", "1e9"])
    assert lenient.exit_code == 0, lenient.stderr
    assert HEADLINE.match(lenient.stdout.strip().splitlines()[-1])
    given = runner.invoke(_app(), ["demographics", "--labels", str(labels), "--threshold", "0.3"])
    assert given.exit_code == 0 and "distance <= 0.3000 (--threshold)" in given.stdout
    assert HEADLINE.match(given.stdout.strip().splitlines()[-1])
