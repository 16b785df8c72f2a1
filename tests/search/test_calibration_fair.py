"""A calibration file carries its fair score map: round trip, backwards compatibility, model binding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamproc.errors import ConfigError
from streamproc.search.calibration import Calibration, OperatingPoint, load_calibration, save_calibration
from streamproc.search.fairscore import fit_fair_map
from streamproc.types import EmbedderIdentity


def _calibration(fair: bool) -> Calibration:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    i, j = np.triu_indices(64, 1)
    fm = fit_fair_map(x, [str(k) for k in range(64)], "cosine", s[i, j], n_clusters=2, lookalike=0.1) if fair else None
    point = OperatingPoint(1e-3, 0.6, 1, 1000, 0.005, 0.99, 100)
    return Calibration("arcface", "ab" * 32, "cosine", "toy", "2026-12-02", "calibrate", (point,), fair_map=fm)


def test_fair_map_round_trips_and_marks_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    original = _calibration(fair=True)
    save_calibration(original, path)
    assert json.loads(path.read_text())["schema_version"] == 2
    loaded = load_calibration(path, EmbedderIdentity("arcface", "ab" * 32, 8, "cosine"))
    assert loaded.fair_map is not None and original.fair_map is not None
    d = np.linspace(0, 1, 11)
    zeros = np.zeros((11, original.fair_map.n_members), np.int64)
    np.testing.assert_allclose(
        loaded.fair_map.calibrate(zeros, zeros + 1, d), original.fair_map.calibrate(zeros, zeros + 1, d), atol=1e-6
    )


def test_files_without_a_map_keep_version_1_and_load(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    save_calibration(_calibration(fair=False), path)
    body = json.loads(path.read_text())
    assert body["schema_version"] == 1 and "fair_map" not in body
    assert load_calibration(path).fair_map is None


def test_a_broken_map_or_other_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    save_calibration(_calibration(fair=True), path)
    body = json.loads(path.read_text())
    body["fair_map"]["metric"] = "l2"
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError, match="metric"):
        load_calibration(path)
    save_calibration(_calibration(fair=True), path)
    with pytest.raises(ConfigError, match="calibrate this model"):
        load_calibration(path, EmbedderIdentity("arcface", "cd" * 32, 8, "cosine"))
