"""A stage that raises something unexpected ends its stream as a failure, never as "done, 0 frames"."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamproc.config import PipelineConfig
from streamproc.messages import Message
from streamproc.metrics import PipelineMetrics
from streamproc.stream.front import StreamFront
from streamproc.types import Detections, ImageBGR
from streamproc.vision.align import ARCFACE_112

HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"


class _BrokenDetector:
    """A detector with a bug: the first call raises a plain RuntimeError (not one of our error types)."""

    cache_key = "broken"
    kind = "broken"

    def detect(self, images: Sequence[ImageBGR]) -> list[Detections]:
        raise RuntimeError("boom")


class _Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def send(self, message: Message, block: bool) -> bool:
        self.messages.append(message)
        return True


def test_an_unexpected_exception_in_a_stage_fails_the_stream(shared_dir: Path, tmp_path: Path) -> None:
    config = PipelineConfig.model_validate(
        {"sources": [{"id": "ham", "url": str(shared_dir / HAMILTON)}], "watchlist": {"path": str(tmp_path / "wl")}}
    )
    registry = CollectorRegistry()
    front = StreamFront(
        config.sources[0], config, _BrokenDetector(), ARCFACE_112, _Sink(), PipelineMetrics(registry), threading.Event()
    )
    front.start()
    front.join(timeout=60)
    assert not front.is_alive()
    assert front.stats.error is not None and "internal error (RuntimeError: boom)" in front.stats.error
    assert registry.get_sample_value("streamproc_source_errors_total", {"stream": "ham"}) == 1.0
