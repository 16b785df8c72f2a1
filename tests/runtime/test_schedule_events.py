"""The detection schedule end to end on the Hamilton clip: the same people are flagged, only while on screen,
as with whole-frame detection on every frame; and the schedule's metrics are exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import hamilton_watchlist, run_with_subscriber

from streamproc.config import PipelineConfig

pytestmark = pytest.mark.shared

FIXTURES = Path(__file__).parents[1] / "fixtures"
HAMILTON = "data/video/face_recognition_short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def enrolled(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hamilton_watchlist(shared_dir, tmp_path_factory.mktemp("wl") / "present")


def _config(shared_dir: Path, watchlist: Path, schedule: bool, **settings: object) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "sources": [{"id": "ham", "url": str(shared_dir / HAMILTON)}],
            "watchlist": {"path": watchlist},
            "events": {"endpoint": "tcp://127.0.0.1:*"},
            "detector": {"schedule": {"enabled": schedule, **settings}},
        }
    )


def test_hamilton_events_are_unchanged_under_the_schedule(shared_dir: Path, enrolled: Path) -> None:
    windows = json.loads((FIXTURES / "hamilton_windows.json").read_text())
    _, every_events, _ = run_with_subscriber(_config(shared_dir, enrolled, schedule=False))
    stats, events, scrape = run_with_subscriber(_config(shared_dir, enrolled, schedule=True))
    assert stats["ham"].error is None and stats["ham"].frames == windows["frames"]  # no frame skipped
    assert {e.subject_id for e in events} == {e.subject_id for e in every_events} >= {"lin_manuel_miranda"}
    for event in events:
        frame = round(event.frame_pts_s * windows["fps"])
        assert any(a - 1 <= frame <= b + 1 for a, b in windows["on_screen"][event.subject_id]), event.subject_id
    # a 640x360 clip: the whole-frame pass shows a 40 px (gate-size) face at 24 px at 0.6x, so it runs at
    # 384x216 with no tiles; the interval is the configured 3 or what the load controller chose on this
    # machine, within its limit
    assert metric(scrape, "streamproc_detect_scale", "ham") == pytest.approx(0.6)
    assert metric(scrape, "streamproc_detect_native_cycle_seconds", "ham") == 0.0
    assert 3 <= metric(scrape, "streamproc_detect_interval", "ham") <= 8
    # decisions first: the stream waited for the in-process embedder's batches (one per best shot or so)
    assert metric(scrape, "streamproc_embed_turn_wait_seconds_total", "ham") > 0.0


def test_a_file_keeps_its_schedule_under_load_unless_told_to_adapt(shared_dir: Path, enrolled: Path) -> None:
    # A budget no frame can meet: a stream that adapts coarsens every 15 frames, up to max_interval.
    def final_interval(adapt: bool) -> float:
        config = _config(shared_dir, enrolled, schedule=True, budget=0.001, adapt_files=adapt)
        stats, _, scrape = run_with_subscriber(config)
        assert stats["ham"].error is None
        return metric(scrape, "streamproc_detect_interval", "ham")

    assert final_interval(adapt=False) == 3.0  # the configured interval: a file waits, every face is looked for
    assert final_interval(adapt=True) == 8.0  # max_interval


def metric(scrape: str, name: str, stream: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(name + "{") and f'stream="{stream}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {stream} not in scrape")
