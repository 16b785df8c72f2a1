"""The fair score map in every thresholded search: the pipeline's matcher, ``identify`` and enrolment's
collision check, with the real SFace model, real photos from ../shared/data and the shipped calibration's map.

The look-alike pair: two UTKFace photos of different women (file names 30_1_2_... and 40_1_2_...), raw
cosine distance ~0.38, far inside the FMR 1e-3 threshold (0.629); they lie in a region where such pairs are
common, so the map puts them at ~0.69, outside it. Found by searching the public faces for a pair with a
wide margin on both sides.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from support import STREAMPROC

from streamproc.config import EventsConfig, PipelineConfig
from streamproc.config_recognition import RecognitionConfig
from streamproc.errors import EnrolmentError
from streamproc.feed.event_feed import EventFeed
from streamproc.messages import BestShot, StreamOpened
from streamproc.metrics import PipelineMetrics
from streamproc.records.audit import AuditLog
from streamproc.runtime.build import build_analyzer
from streamproc.runtime.matcher import Matcher
from streamproc.search.calibration import Calibration, Threshold, shipped_calibration
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.fairsearch import FairSearcher
from streamproc.search.governance import check_collisions
from streamproc.search.templates import NewSubject, NewTemplate
from streamproc.search.watchlist import Watchlist
from streamproc.search.watchlist_handle import WatchlistHandle
from streamproc.types import Quality
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.imageio import read_image

pytestmark = pytest.mark.shared

ENROLLED = "data/demographic/utkface/30_1_2_20170116174427095.jpg.chip.jpg"
LOOKALIKE = "data/demographic/utkface/40_1_2_20170116164709968.jpg.chip.jpg"
OBAMA = "data/identity/face_recognition/barack_obama"


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return build_analyzer(RecognitionConfig())


@pytest.fixture(scope="module")
def calibration(analyzer: FaceAnalyzer) -> Calibration:
    shipped = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
    assert shipped is not None and shipped[0].fair_map is not None, "the shipped SFace calibration has a fair map"
    return shipped[0]


@pytest.fixture(scope="module")
def threshold(calibration: Calibration) -> float:
    return calibration.threshold_for(1e-3).distance_threshold


@pytest.fixture(scope="module")
def watchlist(shared_dir: Path, analyzer: FaceAnalyzer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects: the enrolled UTKFace woman and Barack Obama (one photo; his other photos are probes)."""
    directory = tmp_path_factory.mktemp("fair") / "wl"
    with Watchlist.create(directory, analyzer.embedder.identity) as wl:
        for sid, path in (("woman", shared_dir / ENROLLED), ("obama", shared_dir / OBAMA / "examples__obama.jpg")):
            templates = templates_from_images([path], analyzer, FaceChoice(largest=True))
            wl.enroll(NewSubject(sid, sid.title(), "test", "test fixture", "pytest"), templates)
    return directory


def _chip(analyzer: FaceAnalyzer, path: Path) -> NDArray[np.uint8]:
    """The largest face's aligned (S, S, 3) uint8 RGB chip, as the pipeline's best shots carry it."""
    faces = analyzer.faces(read_image(path))
    assert faces, path
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).chip


def test_the_pair_is_inside_the_raw_threshold_and_outside_it_on_the_map(
    shared_dir: Path, analyzer: FaceAnalyzer, calibration: Calibration, threshold: float
) -> None:
    a, b = analyzer.embedder.embed(np.stack([_chip(analyzer, shared_dir / p) for p in (ENROLLED, LOOKALIKE)]))
    raw = 1.0 - float(a @ b)
    assert calibration.fair_map is not None
    fair = float(calibration.fair_map.calibrate_pairs(a[None], b[None], np.array([raw]))[0])
    assert raw < threshold - 0.1 and fair > threshold + 0.03, (raw, fair, threshold)


def _run_matcher(
    watchlist: Path, analyzer: FaceAnalyzer, threshold: Threshold, chip: NDArray[np.uint8], audit_dir: Path
) -> tuple[int, list[tuple[str | None, dict[str, Any]]]]:
    """Three best shots of one track through a real Matcher: (flags raised, the flag audit records' subject
    and details)."""
    config = PipelineConfig.model_validate(
        {"sources": [{"id": "cam1", "url": "clip.mp4"}], "watchlist": {"path": watchlist}}
    )
    metrics = PipelineMetrics(CollectorRegistry())
    audit = AuditLog.open_or_create(audit_dir, actor="pytest")
    handle = WatchlistHandle(watchlist, analyzer.embedder.identity, reload_s=60.0)
    with EventFeed(EventsConfig(endpoint="tcp://127.0.0.1:*"), metrics) as feed:
        matcher = Matcher(config, analyzer.embedder, handle, threshold, feed, metrics, audit)
        shots = [_shot(chip, t) for t in range(3)]
        matcher.process([StreamOpened("cam1", ""), *shots])
    handle.close()
    flags = [(r.subject_id, dict(r.details)) for r in audit.records() if r.action == "flag"]
    return matcher.stats["cam1"].flags, flags


def _shot(chip: NDArray[np.uint8], t: int) -> BestShot:
    return BestShot(
        stream_id="cam1",
        session="",
        track_id=1,
        track_start_s=0.0,
        t_s=float(t),
        box=(0.0, 0.0, 100.0, 100.0),
        captured_at=time.time(),
        sent_at=time.time(),
        quality=Quality(1.0, 100.0, 100.0, 0.0, 0.0, 1.0),
        timings_ms={},
        chip=chip,
    )


def test_the_matcher_decides_on_the_mapped_distance(
    shared_dir: Path,
    analyzer: FaceAnalyzer,
    calibration: Calibration,
    threshold: float,
    watchlist: Path,
    tmp_path: Path,
) -> None:
    with_map = Threshold(threshold, calibration, "sface-v1.json", 1e-3)
    without = Threshold(threshold, replace(calibration, fair_map=None), "sface-v1.json", 1e-3)
    lookalike = _chip(analyzer, shared_dir / LOOKALIKE)

    flagged, records = _run_matcher(watchlist, analyzer, without, lookalike, tmp_path / "a")
    assert flagged == 1 and records[0][0] == "woman"  # raw distances: the look-alike is flagged
    assert records[0][1]["fair_map"] is False and records[0][1]["distance"] < threshold - 0.1

    flagged, records = _run_matcher(watchlist, analyzer, with_map, lookalike, tmp_path / "b")
    assert (flagged, records) == (0, [])  # the map puts the look-alike outside the same threshold

    obama = _chip(analyzer, shared_dir / OBAMA / "examples__obama2.jpg")  # the same person still flags
    flagged, records = _run_matcher(watchlist, analyzer, with_map, obama, tmp_path / "c")
    assert flagged == 1 and records[0][0] == "obama" and records[0][1]["fair_map"] is True
    assert records[0][1]["distance"] <= threshold


def test_identify_reports_the_mapped_distance(shared_dir: Path, watchlist: Path, threshold: float) -> None:
    proc = subprocess.run(
        [
            STREAMPROC,
            *("identify", "-w", str(watchlist), "--operator", "pytest", "--reason", "test"),
            *(str(shared_dir / LOOKALIKE), str(shared_dir / OBAMA / "examples__obama2.jpg")),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert "fair score map applied" in proc.stdout
    lines = {line.split(".")[1].split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  1. ")}
    woman, obama = lines["woman"], lines["obama"]
    fair = float(woman.split("distance=")[1].split()[0])
    raw = float(woman.split("(raw ")[1].split(")")[0])
    assert raw < threshold < fair and "candidate for human review" not in woman
    assert "candidate for human review" in obama


def test_the_collision_check_uses_the_map(
    shared_dir: Path, analyzer: FaceAnalyzer, calibration: Calibration, threshold: float, watchlist: Path
) -> None:
    lookalike = templates_from_images([shared_dir / LOOKALIKE], analyzer, FaceChoice(largest=True))
    obama2 = templates_from_images([shared_dir / OBAMA / "examples__obama2.jpg"], analyzer, FaceChoice(largest=True))
    with Watchlist.open(watchlist, analyzer.embedder.identity) as wl:
        check_collisions(wl, "new-woman", lookalike, threshold, calibration.fair_map)  # not a collision on the map
        with pytest.raises(EnrolmentError, match="subject woman"):
            check_collisions(wl, "new-woman", lookalike, threshold)  # it is one on raw distances
        with pytest.raises(EnrolmentError, match=r"subject obama .*fair-map distance"):
            check_collisions(wl, "obama-again", obama2, threshold, calibration.fair_map)  # the same person is


def test_the_widened_shortlist_finds_what_scoring_every_template_finds(
    calibration: Calibration, analyzer: FaceAnalyzer, tmp_path: Path
) -> None:
    """Exactness of the stopping rule: 100 subjects (1-3 templates each) near the map's own centroids, so
    cluster pairs differ, searched for 40 probes, against scoring every template through the map."""
    fair_map = calibration.fair_map
    assert fair_map is not None
    rng = np.random.default_rng(7)
    centres = fair_map.centroids[0]

    def near(n: int) -> NDArray[np.float32]:
        x = centres[rng.integers(len(centres), size=n)] + rng.normal(0, 0.06, (n, centres.shape[1]))
        return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)

    counts = rng.integers(1, 4, size=100)
    vectors = near(int(counts.sum()))
    owner = np.repeat(np.arange(100), counts)
    with Watchlist.create(tmp_path / "wl", analyzer.embedder.identity) as wl:
        start = 0
        for s, c in enumerate(counts):
            templates = [
                NewTemplate(v, f"{s:04d}{j}".ljust(64, "0"), 1.0) for j, v in enumerate(vectors[start : start + c])
            ]
            wl.enroll(NewSubject(f"s{s:03d}", f"S {s}", "test", "test", "pytest"), templates)
            start += c
        probes = near(40)
        searcher = FairSearcher(fair_map)
        found = searcher.search(wl, probes, k=5)
        within = searcher.search(wl, probes, k=3, within=0.5)
    inside_any = 0
    for probe, hits, near_hits in zip(probes, found, within, strict=True):
        raw = 1.0 - vectors.astype(np.float64) @ probe.astype(np.float64)
        fair = fair_map.calibrate(
            np.repeat(fair_map.assign(probe[None]), len(vectors), axis=0), fair_map.assign(vectors), raw
        )
        best = {f"s{s:03d}": float(fair[owner == s].min()) for s in range(100)}
        expected = sorted(best.items(), key=lambda kv: kv[1])[:5]
        assert [h.subject_id for h in hits] == [sid for sid, _ in expected]
        assert np.allclose([h.distance for h in hits], [d for _, d in expected], atol=1e-5)
        # with ``within``: every subject within it is found, in order (what a threshold decision needs)
        inside = [sid for sid, d in expected[:3] if d <= 0.5]
        assert [h.subject_id for h in near_hits][: len(inside)] == inside
        inside_any += bool(inside)
    assert 0 < inside_any < len(probes)  # both cases occur
