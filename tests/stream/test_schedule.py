"""The detection schedule: what each frame detects in, and how the load controller moves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamproc.config_recognition import ScheduleConfig
from streamproc.stream.schedule import DetectionSchedule
from streamproc.types import Detections, ImageBGR
from streamproc.vision.regions import Region
from streamproc.vision.track import Predictions


def _plans(schedule: DetectionSchedule, n: int, tracks: int = 0) -> list[tuple[bool, int | None, int]]:
    boxes = np.array([[100 + 60 * i, 100, 140 + 60 * i, 150] for i in range(tracks)], np.float64)
    out = []
    for _ in range(n):
        plan = schedule.plan(1080, 1920, Predictions.new(boxes))
        out.append((plan.full, plan.tile, sum(1 for r in plan.regions if r.out_w == 96)))
    return out


def test_whole_frame_every_interval_tiles_in_turn_and_a_window_per_track() -> None:
    cfg = ScheduleConfig(enabled=True, interval=3, tile_stride=1, small_face_px=0)  # every window at window_px
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
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
        enabled=True,
        interval=100,
        max_interval=100,
        tile_stride=1000,
        max_windows=24,
        window_context=2.0,
        small_face_px=0,
    )
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    sides = 20.0 + 5.0 * np.arange(30)
    boxes = np.array([[60 * i, 500, 60 * i + s, 500 + s] for i, s in enumerate(sides)], np.float64)
    schedule.plan(
        1080, 1920, Predictions.new(boxes)
    )  # frame 0: the whole-frame pass (large faces need no window there)
    seen = np.zeros(30, int)
    for _ in range(30):
        windows = [r for r in schedule.plan(1080, 1920, Predictions.new(boxes)).regions if r.out_w == 96]
        assert len(windows) == 24
        for w in windows:  # a window's side is twice its face's (context 2): distinct for every track
            seen[np.flatnonzero(2 * sides == w.x1 - w.x0)] += 1
    assert seen.min() >= 20 and seen.sum() == 24 * 30


def test_a_small_frame_gets_no_tiles_when_the_whole_frame_pass_is_native() -> None:
    schedule = DetectionSchedule(ScheduleConfig(enabled=True), 0.4, 12.0)
    plan = schedule.plan(360, 640, Predictions.new(np.zeros((0, 4))))
    assert plan.full and plan.tile is None and plan.regions[0].scale == 1.0


def test_a_pass_showing_gate_size_faces_at_full_face_px_replaces_the_pass_and_tiles_where_it_costs_less() -> None:
    """Quality gate 40 px, full_face_px 24: a pass at 0.6x finds every face the stream would embed. 640x360 runs
    it at 384x216 (cheaper than native); 1280x720 at 768x432 with no tiles (110,592 network px a frame against
    76,800 + 112,640 for the 640 px pass and a tile every other frame); 1920x1080 keeps the 640 px pass and its
    native tiles (a 1152x648 pass every 3rd frame would cost 248,832). Without the gate's size, or with
    full_face_px 0, full_side alone decides."""
    cfg = ScheduleConfig(enabled=True, full_face_px=24.0, full_side=640, interval=3, tile_stride=2)
    none = Predictions.new(np.zeros((0, 4)))
    for (height, width), network, tiles in (
        ((360, 640), (384, 216), False),
        ((720, 1280), (768, 432), False),
        ((1080, 1920), (640, 360), True),
    ):
        schedule = DetectionSchedule(cfg, 0.4, 12.0, gate_face_px=40.0)
        plan = schedule.plan(height, width, none)
        assert plan.full and (plan.regions[0].out_w, plan.regions[0].out_h) == network
        assert (plan.tile == 0) is tiles
    ungated = DetectionSchedule(cfg, 0.4, 12.0).plan(720, 1280, none)
    assert ungated.regions[0].out_w == 640 and ungated.tile == 0
    off = DetectionSchedule(cfg.model_copy(update={"full_face_px": 0.0}), 0.4, 12.0, gate_face_px=40.0)
    assert off.plan(360, 640, none).regions[0].scale == 1.0


def test_the_controller_coarsens_under_load_and_recovers_with_slack() -> None:
    cfg = ScheduleConfig(enabled=True, interval=2, max_interval=4, tile_stride=1, max_tile_cycle_s=2.0)
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    period = 1 / 30
    t = 0.0
    for _ in range(400):  # every frame takes twice its period: the schedule must give ground
        t += period
        schedule.observe(t, 2 * period, backlog=None)
    hot = schedule.state
    assert hot.interval == 4  # the interval first, up to its maximum ...
    assert hot.tile_stride > 1 and hot.native_cycle_s <= 2.0 + 1e-9  # ... then the tiles, within their limit
    assert hot.window_cap == 24 // 8  # ... and last the windows: the cap halves three times at most
    for _ in range(1000):  # now cheap: back to the configured schedule, never below it
        t += period
        schedule.observe(t, 0.1 * period, backlog=0.0)
    cool = schedule.state
    assert (cool.interval, cool.tile_stride, cool.window_cap) == (2, 1, 24)


def test_under_load_overlap_regions_go_first_then_small_faces_native_windows_then_the_interval() -> None:
    """A 1080p layout (tiles): level 1 drops the overlap regions, level 2 gives the 60 px face the ordinary
    window, level 3 stretches the interval. 720p (no tiles) has no such levels to give up."""
    cfg = ScheduleConfig(enabled=True, interval=3, max_interval=8)
    faces = Predictions.new(np.array([[400.0, 300.0, 460.0, 360.0], [1000, 500, 1120, 650], [1060, 490, 1150, 620]]))
    seen = []
    for level in (0, 1, 2, 3):
        schedule = DetectionSchedule(cfg, 0.4, 12.0, gate_face_px=40.0)
        schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))  # frame 0: lays out the tiles
        schedule.pin_level(level)
        state = schedule.state
        plan = schedule.plan(1080, 1920, faces)
        seen.append(sorted(r.out_w for r in plan.regions if r.scale == 1.0 or r.out_w == 96))
        assert (state.overlap_regions, state.native_windows, state.interval) == (
            (True, True, 3),
            (False, True, 3),
            (False, False, 3),
            (False, False, 4),
        )[level]
    assert seen == [[96, 96, 192, 640], [96, 96, 192], [96, 96, 96], [96, 96, 96]]
    hd720 = DetectionSchedule(cfg, 0.4, 12.0, gate_face_px=40.0)
    hd720.plan(720, 1280, Predictions.new(np.zeros((0, 4))))
    hd720.pin_level(1)
    assert (hd720.state.overlap_regions, hd720.state.native_windows, hd720.state.interval) == (False, False, 4)


def test_under_the_heaviest_load_tracks_take_turns_for_fewer_windows() -> None:
    """At the window level, 20 tracks share a cap of 3 windows a frame: each is still measured every ~7
    frames (a frame with 20 windows costs what the load controller could not shed otherwise)."""
    cfg = ScheduleConfig(
        enabled=True, interval=100, max_interval=100, tile_stride=1000, small_face_px=0, overlap_windows=False
    )
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    # no native level, no interval span, no frame period seen yet (no tile doublings): 3 window halvings
    schedule.pin_level(3)
    boxes = np.array([[90 * i, 500, 90 * i + 60, 560] for i in range(20)], np.float64)
    seen = np.zeros(20, int)
    for _ in range(21):
        windows = [r for r in schedule.plan(1080, 1920, Predictions.new(boxes)).regions if r.out_w == 96]
        assert len(windows) == 3
        for w in windows:
            seen[int((w.x0 + w.x1) / 2 - 30) // 90] += 1
    assert schedule.state.window_cap == 3 and (seen >= 3).all()


def test_a_growing_backlog_coarsens_even_when_frames_look_cheap() -> None:
    schedule = DetectionSchedule(ScheduleConfig(enabled=True, interval=1), 0.4, 12.0)
    schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
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
    schedule = DetectionSchedule(ScheduleConfig(enabled=True, small_face_px=80), 0.4, 12.0)
    track = np.array([[900.0, 500.0, 960.0, 560.0]])
    plan = schedule.plan(1080, 1920, Predictions.new(track))
    recorder = _Recorder()
    dets = schedule.detect(recorder, np.zeros((1080, 1920, 3), np.uint8), plan)
    assert sorted(recorder.sizes) == sorted([(192, 192), (360, 640), (352, 640)])  # a 60 px face: native window
    window = plan.regions[0]
    assert isinstance(window, Region)
    centre = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    assert np.isclose(centre, [930, 530], atol=2).all(axis=1).any()  # the window's face, at the track


def _windows(schedule: DetectionSchedule, boxes: list[list[float]]) -> list[Region]:
    """The window regions planned for ``boxes`` on a 1080p frame without the whole-frame pass or a tile."""
    plan = schedule.plan(1080, 1920, Predictions.new(np.array(boxes, np.float64)))
    return [r for r in plan.regions if (r.x1 - r.x0, r.y1 - r.y0) not in {(1920, 1080), (640, 352)}]


def test_small_faces_get_a_native_window_with_a_tiles_context_and_large_faces_the_usual_one() -> None:
    """A 60 px face: a 192x192 window seen at 192 px (native; the 96 px window shrank it to 0.8x and saw
    it at 0-0.5 where a native tile saw 0.92); a 120 px face: the usual 240 px window seen at 96 px."""
    cfg = ScheduleConfig(enabled=True, interval=100, max_interval=100, tile_stride=1000, small_face_px=80)
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))  # frame 0: the whole-frame pass
    small, large = _windows(schedule, [[400, 300, 450, 360], [1000, 500, 1120, 620]])
    if small.out_w != 192:
        small, large = large, small
    assert (small.x1 - small.x0, small.out_w, small.scale) == (192, 192, 1.0)
    assert (small.x0 + small.x1) / 2 == 425 and (small.y0 + small.y1) / 2 == 330  # centred on the face
    assert (large.x1 - large.x0, large.out_w) == (240, 96)


def test_a_small_face_inside_a_neighbours_native_window_shares_it_and_edges_shift_it_inside() -> None:
    cfg = ScheduleConfig(enabled=True, interval=100, max_interval=100, tile_stride=1000, small_face_px=80)
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    # two 40 px faces 50 px apart share one window (each one's 80 px context lies inside it); a third far away,
    # at the frame's corner, gets its own, shifted to stay inside the frame
    windows = _windows(schedule, [[500, 500, 540, 540], [550, 500, 590, 540], [1900, 0, 1920, 30]])
    assert len(windows) == 2 and all(w.out_w == 192 and w.scale == 1.0 for w in windows)
    corner = max(windows, key=lambda w: w.x0)
    assert (corner.x1, corner.y0) == (1920, 0)
    # small_face_px 0: every face gets the window_px window, one each
    plain = DetectionSchedule(cfg.model_copy(update={"small_face_px": 0.0}), 0.4, 12.0)
    plain.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    assert [w.out_w for w in _windows(plain, [[500, 500, 540, 540], [550, 500, 590, 540]])] == [96, 96]


def test_no_native_windows_where_the_whole_frame_pass_is_native() -> None:
    """640x360: the whole-frame pass is native every few frames and sees a small face with all its context,
    so a 60 px face keeps the ordinary window (a 192 px one would cost 16% of the frame a face)."""
    schedule = DetectionSchedule(ScheduleConfig(enabled=True, small_face_px=80), 0.4, 12.0)
    schedule.plan(360, 640, Predictions.new(np.zeros((0, 4))))
    plan = schedule.plan(360, 640, Predictions.new(np.array([[300.0, 150.0, 345.0, 210.0]])))
    assert [(r.x1 - r.x0, r.out_w) for r in plan.regions] == [(120, 96)]


def test_native_windows_only_with_tiles_and_for_faces_near_the_gate() -> None:
    """1080p (tiles): a 50 px face gets the native window, a 24 px one (under 3/4 of the 40 px gate, never
    embedded) the usual one; 720p (one whole-frame pass shows a gate-size face at 24 px, no tiles): neither."""
    cfg = ScheduleConfig(enabled=True, interval=100, max_interval=100, tile_stride=1000)
    assert cfg.small_face_px == 80  # the default
    hd = DetectionSchedule(cfg, 0.4, 12.0, gate_face_px=40.0)
    hd.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    tiny, near = sorted(_windows(hd, [[400, 300, 450, 360], [1000, 500, 1024, 524]]), key=lambda r: -r.x0)
    assert (near.out_w, near.scale, tiny.out_w) == (192, 1.0, 96)
    hd720 = DetectionSchedule(ScheduleConfig(enabled=True), 0.4, 12.0, gate_face_px=40.0)  # interval 3
    hd720.plan(720, 1280, Predictions.new(np.zeros((0, 4))))
    plan = hd720.plan(720, 1280, Predictions.new(np.array([[400.0, 300.0, 450.0, 360.0]])))
    assert [(r.x1 - r.x0, r.out_w) for r in plan.regions] == [(120, 96)]


def _tracks(sides: Sequence[float], idle: Sequence[int], confirmed: Sequence[bool]) -> Predictions:
    boxes = np.array([[100 + 300 * i, 500, 100 + 300 * i + s, 500 + s] for i, s in enumerate(sides)], np.float64)
    n = len(sides)
    ids = np.where(confirmed, np.arange(1, n + 1), 0)
    return Predictions(boxes, np.arange(10, 10 + n), np.array(idle, np.int64), ids)


def test_a_steady_track_is_measured_every_other_frame_and_new_or_missed_ones_every_frame() -> None:
    """window_stride 2: a confirmed track matched on the last frame skips its window and is reported as not
    searched (the tracker then carries it); a tentative track, or one missed last frame, gets a window."""
    cfg = ScheduleConfig(
        enabled=True, interval=100, max_interval=100, tile_stride=1000, window_stride=2, small_face_px=0
    )
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    schedule.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))  # frame 0: the whole-frame pass
    plan = schedule.plan(1080, 1920, _tracks([60, 60, 60, 60], [0, 1, 0, 3], [True, True, False, True]))
    assert sorted(r.x0 for r in plan.regions) == [370, 670, 970]  # the windows of tracks 11, 12 and 13
    assert plan.unsearched == {10}
    every = DetectionSchedule(cfg.model_copy(update={"window_stride": 1}), 0.4, 12.0)
    every.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    plan = every.plan(1080, 1920, _tracks([60, 60, 60, 60], [0, 1, 0, 3], [True, True, False, True]))
    assert len(plan.regions) == 4 and plan.unsearched == frozenset()


def test_the_whole_frame_pass_searches_the_faces_it_sees_and_windows_over_the_cap_are_not_searched() -> None:
    cfg = ScheduleConfig(enabled=True, interval=3, tile_stride=1000, max_windows=1, window_stride=2, small_face_px=0)
    schedule = DetectionSchedule(cfg, 0.4, 12.0)
    # frame 0 has the whole-frame pass (1/3 scale): the 200 px face is seen there, the 60 px ones are not
    plan = schedule.plan(1080, 1920, _tracks([200, 60, 60], [1, 1, 0], [True, True, True]))
    assert plan.full and [r.x0 for r in plan.regions if r.out_w == 96] == [370]  # track 11's window
    assert plan.unsearched == {12}  # 10 is seen by the whole-frame pass; 12 waits (matched last frame)
    plan = schedule.plan(1080, 1920, _tracks([200, 60, 60], [1, 1, 1], [True, True, True]))
    windows = [r for r in plan.regions if r.out_w == 96]
    assert not plan.full and len(windows) == 1 and len(plan.unsearched) == 2  # the cap: one of three


def test_overlapping_tracks_get_a_native_tile_sized_region_around_the_pair_only_with_tiles_and_no_load() -> None:
    """A face half behind a nearer one (boxes overlapping): one native 640x352 region (the tiles' size, so it
    batches with them) centred on the pair; none for faces apart, none at 720p (no tiles), none under load."""
    cfg = ScheduleConfig(enabled=True, interval=100, max_interval=100, tile_stride=1000)
    pair = [[1000.0, 500.0, 1120.0, 650.0], [1060.0, 490.0, 1150.0, 620.0]]
    apart = [[200.0, 200.0, 300.0, 320.0]]

    def overlap(schedule: DetectionSchedule, height: int, width: int, boxes: list[list[float]]) -> list[Region]:
        plan = schedule.plan(height, width, Predictions.new(np.array(boxes, np.float64)))
        return [r for r in plan.regions if (r.out_w, r.out_h) == (640, 352) and r.scale == 1.0]

    hd = DetectionSchedule(cfg, 0.4, 12.0, gate_face_px=40.0)
    hd.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))  # frame 0: lays out the tiles (and runs the pass)
    (region,) = overlap(hd, 1080, 1920, pair + apart)
    assert (region.x1 - region.x0, region.y1 - region.y0) == (640, 352)
    assert (region.x0 + region.x1) / 2 == 1075 and (region.y0 + region.y1) / 2 == 570  # the pair's centre
    assert overlap(hd, 1080, 1920, [*apart, [1000.0, 500.0, 1120.0, 650.0]]) == []
    hd.pin_level(1)  # the first load level takes them (bench/RESULTS.md, issue 13 run 19: they cost the most)
    assert overlap(hd, 1080, 1920, pair) == []
    off = DetectionSchedule(cfg.model_copy(update={"overlap_windows": False}), 0.4, 12.0, gate_face_px=40.0)
    off.plan(1080, 1920, Predictions.new(np.zeros((0, 4))))
    assert overlap(off, 1080, 1920, pair) == []
    hd720 = DetectionSchedule(ScheduleConfig(enabled=True), 0.4, 12.0, gate_face_px=40.0)  # a 768x432 pass
    hd720.plan(720, 1280, Predictions.new(np.zeros((0, 4))))
    assert [r.out_w for r in hd720.plan(720, 1280, Predictions.new(np.array(pair))).regions] == [96, 96]
