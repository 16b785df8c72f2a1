"""Report files (JSON, Markdown, PNG) and the CLI headline lines."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from streamproc.eval import report as report_mod
from streamproc.eval.metrics import auc, kfold_accuracy, tar_at_fmr
from streamproc.eval.report import (
    VerificationReport,
    format_headline_lines,
    operating_points,
    write_verification_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_scores() -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    rng = np.random.default_rng(7)
    return rng.normal(2.0, 1.0, size=3000), rng.normal(0.0, 1.0, size=3000).astype(np.float32)


def make_report(genuine: NDArray[np.float64], impostor: NDArray[np.float32]) -> VerificationReport:
    scores = np.concatenate((genuine, impostor.astype(np.float64)))
    same = np.concatenate((np.ones(genuine.size, bool), np.zeros(impostor.size, bool)))
    folds = np.arange(scores.size, dtype=np.int64) % 10
    mean, std, per_fold = kfold_accuracy(scores, same, folds)
    ops = {key: tar_at_fmr(genuine, impostor, float(key)) for key in ("1e-2", "1e-3")}
    return VerificationReport(
        name="LFW View 2 | test",
        n_pairs=int(scores.size),
        n_genuine=int(genuine.size),
        n_impostor=int(impostor.size),
        n_folds=10,
        accuracy_mean=mean,
        accuracy_std=std,
        fold_accuracies=per_fold,
        tar_at_fmr={k: v[0] for k, v in ops.items()},
        threshold_at_fmr={k: v[1] for k, v in ops.items()},
        all_pairs={
            "n_genuine": 242_257.0,
            "n_impostor": 87_307_271.0,
            "TAR@FMR1e-4": 0.5,
            "TAR@FMR1e-5": 0.25,
        },
        failure_to_detect=13 / 13233,
        n_images=13233,
        n_failed_images=13,
        auc=auc(genuine, impostor),
        extra={"model": "dlib-resnet", "sha256": "ab" * 32, "machine": "ci", "date": "2024-01-01"},
    )


def test_write_verification_report_files(tmp_path: Path) -> None:
    genuine, impostor = make_scores()
    rep = make_report(genuine, impostor)
    out = tmp_path / "new" / "dir"
    paths = write_verification_report(rep, genuine, impostor, out)

    assert set(paths) == {"json", "markdown", "det", "roc"}
    assert sorted(p.name for p in out.iterdir()) == ["det.png", "report.json", "report.md", "roc.png"]
    for key in ("det", "roc"):
        data = paths[key].read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000

    doc = json.loads(paths["json"].read_text())
    assert doc["schema_version"] == 1
    assert doc["name"] == rep.name and doc["n_pairs"] == 6000
    assert doc["tar_at_fmr"] == rep.tar_at_fmr and doc["extra"] == rep.extra
    assert doc["fold_accuracies"] == rep.fold_accuracies
    assert doc["failure_to_detect_ci"][0] < rep.failure_to_detect < doc["failure_to_detect_ci"][1]
    points = {p["fmr_target"]: p for p in doc["operating_points"]}
    assert set(points) == {"1e-2", "1e-3"}
    p3 = points["1e-3"]
    assert p3["n_impostor"] == 3000 and p3["impostor_accepted"] <= 3
    assert p3["tar"] == rep.tar_at_fmr["1e-3"]
    assert p3["genuine_accepted"] == round(p3["tar"] * 3000)
    assert p3["tar_ci"][0] <= p3["tar"] <= p3["tar_ci"][1]

    md = paths["markdown"].read_text()
    assert md.startswith("# Verification report: LFW View 2 \\| test")
    assert "## Operating points" in md and "| 1e-3 |" in md
    assert "TAR@FMR1e-5 | 0.2500" in md and "| n_impostor | 87307271 |" in md
    assert "![DET curve](det.png)" in md and "![ROC curve](roc.png)" in md
    assert "| sha256 | " + "ab" * 32 + " |" in md


def test_operating_points_count_float32_in_float64() -> None:
    genuine, impostor = make_scores()
    rep = make_report(genuine, impostor)
    for p in operating_points(rep, genuine, impostor):
        t = rep.threshold_at_fmr[p.fmr_target]
        assert p.impostor_accepted == np.count_nonzero(impostor.astype(np.float64) >= t)
        assert p.impostor_accepted <= math.floor(float(p.fmr_target) * 3000 + 1e-9)
        assert p.genuine_accepted == np.count_nonzero(genuine >= t)


def test_report_overwrites_and_writes_non_finite_as_null(tmp_path: Path) -> None:
    genuine, impostor = make_scores()
    rep = replace(
        make_report(genuine, impostor),
        tar_at_fmr={"1": 1.0},
        threshold_at_fmr={"1": -math.inf},
        all_pairs=None,
        accuracy_std=math.nan,
    )
    write_verification_report(make_report(genuine, impostor), genuine, impostor, tmp_path)
    paths = write_verification_report(rep, genuine, impostor, tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert doc["threshold_at_fmr"] == {"1": None} and doc["accuracy_std"] is None
    assert doc["all_pairs"] is None
    assert doc["operating_points"][0]["impostor_accepted"] == 3000
    assert len(list(tmp_path.iterdir())) == 4
    assert "## All pairs" not in paths["markdown"].read_text()


def test_threshold_recomputed_when_missing(tmp_path: Path) -> None:
    genuine, impostor = make_scores()
    rep = replace(make_report(genuine, impostor), threshold_at_fmr={})
    full = make_report(genuine, impostor)
    assert operating_points(rep, genuine, impostor) == operating_points(full, genuine, impostor)
    bad = replace(rep, tar_at_fmr={"one-in-a-thousand": 0.5})
    with pytest.raises(ValueError, match="one-in-a-thousand"):
        operating_points(bad, genuine, impostor)


def test_write_rejects_empty_scores(tmp_path: Path) -> None:
    genuine, impostor = make_scores()
    with pytest.raises(ValueError):
        write_verification_report(make_report(genuine, impostor), genuine[:0], impostor, tmp_path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    def boom(fh: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        report_mod._atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_format_headline_lines() -> None:
    rep = VerificationReport(
        name="lfw",
        n_pairs=6000,
        n_genuine=3000,
        n_impostor=3000,
        n_folds=10,
        accuracy_mean=0.99383,
        accuracy_std=0.00412,
        fold_accuracies=[0.99] * 10,
        tar_at_fmr={"1e-2": 0.99, "1e-3": 0.97654},
        threshold_at_fmr={"1e-2": -0.6, "1e-3": -0.5},
        all_pairs={
            "n_genuine": 242_257.0,
            "n_impostor": 87_307_271.0,
            "TAR@FMR1e-4": 0.91236,
            "TAR@FMR1e-5": 0.8,
        },
        failure_to_detect=0.000982,
        n_images=13233,
        n_failed_images=13,
        auc=0.99871,
        extra={},
    )
    assert format_headline_lines(rep) == [
        "lfw: 6000 pairs (3000 genuine, 3000 impostor), 10 folds",
        "Accuracy: 0.9938 +/- 0.0041",
        "AUC: 0.9987",
        "TAR@FMR1e-2: 0.9900",
        "TAR@FMR1e-3: 0.9765",
        "All pairs: 242257 genuine, 87307271 impostor",
        "TAR@FMR1e-4(all): 0.9124",
        "TAR@FMR1e-5(all): 0.8000",
        "Failure to detect: 0.0010 (13/13233 images)",
    ]
    lines = format_headline_lines(replace(rep, all_pairs=None))
    assert not any("(all)" in line or line.startswith("All pairs") for line in lines)
    assert "TAR@FMR1e-3: 0.9765" in lines


def test_importing_eval_does_not_import_matplotlib() -> None:
    imports = "import sys, streamproc.eval.metrics, streamproc.eval.report"
    code = f"{imports}; sys.exit(int('matplotlib' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
