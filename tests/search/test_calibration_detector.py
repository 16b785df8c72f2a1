"""A calibration is bound to the detector whose landmarks made the chips: another detector's faces are refused.

YuNet's landmarks move the aligned chips enough to move the scores (LFW TAR@FMR1e-5 0.964 with RetinaFace's,
0.946 with YuNet's; bench/RESULTS.md), so thresholds measured on RetinaFace chips have no known false-match
rate under YuNet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamproc.config import PipelineConfig
from streamproc.config_recognition import YuNetConfig
from streamproc.errors import ConfigError
from streamproc.runtime.build import resolve_threshold
from streamproc.search.calibration import (
    Calibration,
    OperatingPoint,
    load_calibration,
    save_calibration,
    shipped_calibration,
)
from streamproc.types import EmbedderIdentity
from streamproc.vision.faces import FaceAnalyzer

IDENT = EmbedderIdentity("arcface", "ab" * 32, 8, "cosine")


def _save(path: Path, detector: str) -> None:
    point = OperatingPoint(1e-3, 0.6, 1, 1000, 0.005, 0.99, 100)
    calibration = Calibration(
        "arcface", "ab" * 32, "cosine", "toy", "2026-12-03", "calibrate", (point,), detector=detector
    )
    save_calibration(calibration, path)


def test_the_detector_is_written_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _save(path, "yunet")
    assert json.loads(path.read_text())["detector"] == "yunet"
    assert load_calibration(path, IDENT, "yunet").detector == "yunet"
    with pytest.raises(ConfigError, match="by the yunet detector, not the configured retinaface"):
        load_calibration(path, IDENT, "retinaface")


def test_files_from_before_the_field_were_retinaface(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    _save(path, "retinaface")
    body = json.loads(path.read_text())
    del body["detector"]
    path.write_text(json.dumps(body))
    assert load_calibration(path, IDENT, "retinaface").detector == "retinaface"
    with pytest.raises(ConfigError, match="retinaface detector"):
        load_calibration(path, IDENT, "yunet")


def test_the_shipped_calibration_refuses_yunet_faces(analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    ident = analyzer.embedder.identity
    assert analyzer.detector.kind == "retinaface"
    shipped = shipped_calibration(ident, "retinaface")
    assert shipped is not None and shipped[0].detector == "retinaface"
    with pytest.raises(ConfigError, match="shipped"):
        shipped_calibration(ident, "yunet")
    # The pipeline's threshold: a YuNet config without its own calibration does not start.
    config = PipelineConfig.model_validate(
        {
            "sources": [{"id": "cam", "url": "x.mp4"}],
            "watchlist": {"path": tmp_path},
            "events": {"endpoint": "tcp://127.0.0.1:1"},
        }
    )
    assert resolve_threshold(config, analyzer.embedder).fmr_target == config.policy.target_fmr
    with pytest.raises(ConfigError, match="not the configured yunet"):
        resolve_threshold(config.model_copy(update={"detector": YuNetConfig()}), analyzer.embedder)
