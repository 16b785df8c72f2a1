"""The detection schedule: what each frame detects in, and how the load controller moves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamproc.config_recognition import ScheduleConfig
from streamproc.stream.schedule import DetectionSchedule
from streamproc.types import Detections, ImageBGR
from streamproc.vision.regions import Region


def _plans(schedule: DetectionSchedule, n: int, tracks: int = 0) -> list[tuple[bool, int | None, int]]:
    boxes = np.array([[100 + 60 * i, 100, 140 + 60 * i, 150] for i in range(tracks)], np.float64)
    out = []
    for _ in range(n):
        plan = schedule.plan(1080, 1920, boxes)
        out.append((plan.full, plan.tile, sum(1 for r in plan.regions if r.out_w == 96)))
    return out


def test_whole_frame_every_interval_tiles_in_turn_and_a_window_per_track() -> None:
    schedule = DetectionSchedule(ScheduleConfig(enabled=True, interval=3, tile_stride=1), 0.4, 12.0)
    plans = _plans(schedule, 20, tracks=2)
    assert [p[0] for p in plans[:7]] == [True, False, False, True, False, False, True]
    tiles = [p[1] for p in plans]
    assert tiles[:16] == list(range(16)) and tiles[16] == 0  # 1080p in 640x352 tiles: a 4x4 grid, then again
    assert all(p[2] == 2 for p in plans)
    state = schedule.state
    assert state.interval == 3 and state.full_scale == 640 / 1920


def test_tracks_over_the_window_cap_take_turns_instead_of_the_largest_going_without() -> None:
    """30 tracks of 20-165 px, at most 24 windows: every frame plans 24, and every track, the largest
    included, gets a window on most frames (before: the six largest never did)."""
    cfg = ScheduleConfig(
        enabled=True, interval=100, max_interval=100, tile_stride=1000, max_windows=24, window_context=2.0
    )
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    sides = 20.0 + 5.0 * np.arange(30)
    boxes = np.array([[60 * i, 500, 60 * i + s, 500 + s] for i, s in enumerate(sides)], np.float64)
    schedule.plan(1080, 1920, boxes)  # frame 0: the whole-frame pass (large faces need no window there)
    seen = np.zeros(30, int)
    for _ in range(30):
        windows = [r for r in schedule.plan(1080, 1920, boxes).regions if r.out_w == 96]
        assert len(windows) == 24
        for w in windows:  # a window's side is twice its face's (context 2): distinct for every track
            seen[np.flatnonzero(2 * sides == w.x1 - w.x0)] += 1
    assert seen.min() >= 20 and seen.sum() == 24 * 30


def test_a_small_frame_gets_no_tiles_when_the_whole_frame_pass_is_native() -> None:
    schedule = DetectionSchedule(ScheduleConfig(enabled=True), 0.4, 12.0)
    plan = schedule.plan(360, 640, np.zeros((0, 4)))
    assert plan.full and plan.tile is None and plan.regions[0].scale == 1.0


def test_the_controller_coarsens_under_load_and_recovers_with_slack() -> None:
    cfg = ScheduleConfig(enabled=True, interval=2, max_interval=4, tile_stride=1, max_tile_cycle_s=2.0)
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    schedule.plan(1080, 1920, np.zeros((0, 4)))
    period = 1 / 30
    t = 0.0
    for _ in range(400):  # every frame takes twice its period: the schedule must give ground
        t += period
        schedule.observe(t, 2 * period, backlog=None)
    hot = schedule.state
    assert hot.interval == 4  # the interval first, up to its maximum ...
    assert hot.tile_stride > 1 and hot.native_cycle_s <= 2.0 + 1e-9  # ... then the tiles, within their limit
    for _ in range(1000):  # now cheap: back to the configured schedule, never below it
        t += period
        schedule.observe(t, 0.1 * period, backlog=0.0)
    cool = schedule.state
    assert (cool.interval, cool.tile_stride) == (2, 1)


def test_a_growing_backlog_coarsens_even_when_frames_look_cheap() -> None:
    schedule = DetectionSchedule(ScheduleConfig(enabled=True, interval=1), 0.4, 12.0)
    schedule.plan(1080, 1920, np.zeros((0, 4)))
    for i in range(60):
        schedule.observe(i / 30, 0.001, backlog=0.75)
    assert schedule.state.interval > 1


class _Recorder:
    """A detector that records the image sizes it was given and finds one face in the middle of each."""

    kind = "recorder"

    @property
    def cache_key(self) -> str:
        return "recorder"

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def detect(self, images: Sequence[ImageBGR]) -> list[Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            self.sizes.append((h, w))
            box = np.array([[w * 0.4, h * 0.4, w * 0.6, h * 0.6]], np.float32)
            out.append(Detections(box, np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32) + box[:, None, :2]))
        return out


def test_detect_runs_every_region_in_one_call_and_answers_in_frame_pixels() -> None:
    schedule = DetectionSchedule(ScheduleConfig(enabled=True), 0.4, 12.0)
    track = np.array([[900.0, 500.0, 960.0, 560.0]])
    plan = schedule.plan(1080, 1920, track)
    recorder = _Recorder()
    dets = schedule.detect(recorder, np.zeros((1080, 1920, 3), np.uint8), plan)
    assert sorted(recorder.sizes) == sorted([(96, 96), (360, 640), (352, 640)])
    window = plan.regions[0]
    assert isinstance(window, Region)
    centre = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    assert np.isclose(centre, [930, 530], atol=2).all(axis=1).any()  # the window's face, at the track
