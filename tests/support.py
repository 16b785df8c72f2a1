"""Shared test helpers: event builders, and running a real pipeline with a subscriber and a metrics scrape."""

from __future__ import annotations

import base64
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from streamproc.config import PipelineConfig
from streamproc.config_recognition import RecognitionConfig
from streamproc.feed.schema import CalibrationInfo, MatchEvent, QualityInfo, make_event_id
from streamproc.feed.subscribe import collecting
from streamproc.messages import BestShot
from streamproc.metrics import serve
from streamproc.models.registry import SFACE
from streamproc.runtime.build import build_analyzer, build_pipeline
from streamproc.search.enrol import FaceChoice, templates_from_images
from streamproc.search.templates import NewSubject
from streamproc.search.watchlist import Watchlist
from streamproc.types import EmbedderIdentity, Quality

JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(range(64))).decode("ascii")
"""A tiny base64 payload that starts like a JPEG (the schema checks the magic bytes)."""


def sface_identity() -> EmbedderIdentity:
    """The default embedder's identity, for a watchlist that a command with the default config will accept."""
    assert SFACE.output_sha256 is not None
    return EmbedderIdentity("sface", SFACE.output_sha256, 128, "cosine")


def make_event(stream: str = "cam1", track: int = 1, subject: str = "s-001", **over: Any) -> MatchEvent:
    """A valid match event; ``over`` replaces any field."""
    fields: dict[str, Any] = {
        "event_id": make_event_id(stream, track, subject, 12.5),
        "stream_id": stream,
        "track_id": track,
        "subject_id": subject,
        "subject_name": "Jane Example",
        "distance": 0.41,
        "distances": [0.45, 0.41],
        "threshold": 0.5,
        "metric": "l2",
        "calibration": CalibrationInfo(fmr_target=1e-3, source="dlib-resnet-v1.json", uncalibrated=False),
        "k": 2,
        "n": 3,
        "frame_pts_s": 12.9,
        "captured_at": 1_800_000_000.25,
        "published_at": 1_800_000_000.40,
        "latency_ms": {"detect": 8.0, "track": 0.2, "embed": 12.0, "search": 0.3, "policy": 0.05, "end_to_end": 150.0},
        "box": (100.0, 80.0, 180.0, 180.0),
        "quality": QualityInfo(score=0.7, face_px=80.0, sharpness=240.0, yaw=0.05, detector_score=0.98),
        "face_jpeg_b64": JPEG,
    }
    fields.update(over)
    return MatchEvent(**fields)


def run_with_subscriber(config: PipelineConfig) -> tuple[dict[str, Any], list[MatchEvent], str]:
    """Run a pipeline in-process with a subscriber connected first; scrape its metrics over HTTP at the end.

    Returns (per-stream stats, events received, the scrape text).
    """
    registry = CollectorRegistry()
    pipeline = build_pipeline(config, registry)
    with serve(registry, "127.0.0.1", 0) as server:
        try:
            with collecting(pipeline.publisher_endpoint, poll_s=0.2) as received:
                time.sleep(0.5)  # PUB/SUB: let the subscription reach the publisher before frames flow
                stats = pipeline.run()
                time.sleep(0.5)
            with urllib.request.urlopen(server.url, timeout=10) as response:
                scrape = response.read().decode()
        finally:
            pipeline.close()
    return dict(stats.items()), received, scrape


def make_watchlist(shared_dir: Path, directory: Path, people: dict[str, list[str]]) -> Path:
    """A watchlist of face_recognition persons (all their photos when the list is empty)."""
    analyzer = build_analyzer(RecognitionConfig())
    with Watchlist.create(directory, analyzer.embedder.identity) as wl:
        for person, files in people.items():
            folder = shared_dir / "data/identity/face_recognition" / person
            paths = [folder / f for f in files] if files else sorted(folder.iterdir())
            templates = templates_from_images(paths, analyzer, FaceChoice(largest=True))
            wl.enroll(
                NewSubject(
                    subject_id=person,
                    display_name=person.replace("_", " ").title(),
                    reason="test",
                    legal_basis="test fixture",
                    added_by="pytest",
                ),
                templates,
            )
    return directory


def hamilton_watchlist(shared_dir: Path, directory: Path) -> Path:
    """The watchlist the Hamilton-clip runs search: Lin-Manuel Miranda (all his photos), Barack Obama (three)."""
    return make_watchlist(
        shared_dir,
        directory,
        {
            "lin_manuel_miranda": [],
            "barack_obama": ["examples__obama.jpg", "examples__obama2.jpg", "tests__test_images__obama3.jpg"],
        },
    )


def make_shot(track: int, stream: str = "s", side: int = 4) -> BestShot:
    """A best shot whose chip is filled with the track id (so order and identity can be checked)."""
    return BestShot(
        stream_id=stream,
        session="",
        track_id=track,
        track_start_s=0.0,
        t_s=float(track),
        box=(0.0, 0.0, 1.0, 1.0),
        captured_at=0.0,
        sent_at=0.0,
        quality=Quality(1.0, 100.0, 100.0, 0.0, 0.0, 1.0),
        timings_ms={},
        chip=np.full((side, side, 3), track % 256, np.uint8),
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STREAMPROC = str(Path(sys.executable).with_name("streamproc"))
"""The console script, run as users run it (in a subprocess)."""
