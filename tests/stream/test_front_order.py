"""Decisions first, in the stream front: the shots whose windows a frame closes leave before that frame is
detected, and the front takes its turn (waits for the embedder) only after sending them. Real clip, real
detector, the schedule on."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamproc.config import PipelineConfig
from streamproc.messages import BestShot, Message, TrackEnded
from streamproc.metrics import PipelineMetrics
from streamproc.runtime.build import build_detector
from streamproc.stream.front import StreamFront
from streamproc.types import Frame
from streamproc.vision.align import ARCFACE_112

pytestmark = pytest.mark.shared

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"


class _Log:
    """One sequence of what the front did: ("turn"), (message), ("frame") in the order they happened."""

    def __init__(self) -> None:
        self.items: list[Message | str] = []

    def send(self, message: Message, block: bool) -> bool:
        self.items.append(message)
        return True

    def wait_turn(self) -> float:
        self.items.append("turn")
        return 0.0

    def frame_done(self, _stream: str, _frame: Frame) -> None:
        self.items.append("frame")


def test_due_shots_leave_before_the_frame_that_closes_their_window(shared_dir: Path, tmp_path: Path) -> None:
    config = PipelineConfig.model_validate(
        {
            "sources": [{"id": "ham", "url": str(shared_dir / HAMILTON)}],
            "watchlist": {"path": str(tmp_path / "wl")},
            "detector": {"schedule": {"enabled": True}},
        }
    )
    log = _Log()
    front = StreamFront(
        config.sources[0],
        config,
        build_detector(config),
        ARCFACE_112,
        log,
        PipelineMetrics(CollectorRegistry()),
        threading.Event(),
        on_frame=log.frame_done,
        turn=log,
    )
    front.start()
    front.join(timeout=300)
    assert front.stats.error is None and front.stats.frames > 100
    # Cut the log at the markers. A gap that ends in "turn" is what the front sent before detecting the frame;
    # a gap that ends in "frame" is what it sent while detecting and tracking it; the last gap is the flush.
    gaps: list[tuple[str, list[Message]]] = []
    gap: list[Message] = []
    for item in log.items:
        if isinstance(item, str):
            gaps.append((item, gap))
            gap = []
        else:
            gap.append(item)
    before = 0
    for marker, messages in gaps:
        ended = {m.track_id for m in messages if isinstance(m, TrackEnded)}
        due = [m for m in messages if isinstance(m, BestShot) and m.track_id not in ended]
        if marker == "frame":
            assert not due, "a shot whose window had closed waited for the closing frame's detection"
        before += len(due)
    assert before >= 3  # windows closed by time (5 on this clip): the check above is not vacuous
