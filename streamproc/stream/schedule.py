"""Which parts of each frame a stream detects in, so a 1080p30 body camera stays real time on two CPU cores.

Full-frame, native-size detection costs ~130 ms a 1080p frame on two cores; the budget is 33 ms. Instead,
every frame gets up to four kinds of :class:`~streamproc.vision.regions.Region`:

- **windows** around live tracks' Kalman-predicted boxes, at native resolution and resized to
  ``window_px`` (batched: one network call for all of them), so known faces keep being measured precisely;
  a face under ``small_face_px`` gets a native window of ``small_window_px`` instead (the face keeps its pixels
  and the network sees a tile's surroundings), where the layout has tiles and the face is near the quality
  gate's size. A confirmed track that was matched on the last frame skips a window (``window_stride`` 2): the
  prediction carries it over one frame, and the tracker is told it was not looked for, so it is not counted
  as a miss. That cuts the windows by ~40% at 640x360 and a 1080p crowd frame's time by ~30%, and the same
  tracks are found (bench/RESULTS.md, issue 13 run 13);
- a native **overlap region** of a tile's size around each pair of live tracks whose boxes overlap
  (``overlap_windows``, in layouts with tiles): a face half hidden behind a nearer one is one box over the
  nearer face in the downscaled pass and in either face's window, and only a native view of the pair with
  its surroundings finds it (:func:`~streamproc.vision.regions.overlap_regions`). On three draws of the
  bench's synthetic street they took the face tracks found from 532 to 547 of 553, for about twice the
  detection time a frame there and ~18% of the 1080p Hamilton clip's (bench/RESULTS.md, issue 13 run 19);
- a **whole-frame pass**, downscaled to ``full_side`` px, every ``interval`` frames: finds new faces;
- **tiles** at native size, one every ``tile_stride`` frames in turn, so the whole frame is searched at full
  resolution every ``tiles x tile_stride`` frames: finds small, distant faces that the downscaled pass misses.

A pass that shows a face of the quality gate's smallest size (the smallest face the stream ever embeds) at
``full_face_px`` network pixels finds every face worth finding by itself: RetinaFace finds 96% of faces at 24-31
network px, 97-98% at 32-63 px, but 82% at 20-23 px and 62% at 16-19 px (bench/face_sizes.py). Where such a
pass costs no more network pixels a frame than the ``full_side`` pass and the tiles, it replaces both: 640x360
runs a 384x216 pass (half the native one's time), 1280x720 a 768x432 pass and no tiles; 1920x1080 keeps the 640
px pass and its tiles. A 1152x648 pass every 3rd frame costs more network pixels; measured, it is faster on
dense crowds and slower on sparse scenes, but it never finds a dark face that the native tiles find
(``tile_stride: 1`` selects it; bench/RESULTS.md, issue 13 run 16).

It adapts to load instead of dropping frames: a controller compares the measured processing time per frame
with the frame period (from media time) and, for paced or live sources, the decoded-frame backlog. Overloaded,
it first drops the overlap regions, then gives small faces the ordinary window instead of the native one, then
lengthens the interval (up to ``max_interval``), then the tile stride (up to ``max_tile_cycle_s``), then halves
the window cap (tracks take turns); with slack again, it steps back, never below the configured interval,
stride and cap. The current interval and the native-coverage cycle are exported as metrics so an operator
sees what load costs. A file read as fast as possible keeps the configured schedule (``adapt_files``):
nothing live falls behind, and on the bench's dense street the coarsest level finds 166 of 182 face tracks
against the configured schedule's 179 (bench/RESULTS.md, issue 13 runs 19-20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamproc.config_recognition import ScheduleConfig
from streamproc.protocols import FaceDetector
from streamproc.types import Detections, ImageBGR
from streamproc.vision.regions import (
    Region,
    detect_regions,
    native_windows,
    overlap_regions,
    tile_grid,
    whole_frame,
    windows_around,
)
from streamproc.vision.track import Predictions


@dataclass(frozen=True)
class Plan:
    """One frame's detection work: the regions, which passes they include (for metrics and tests), and the
    tracks it does not look for."""

    regions: tuple[Region, ...]
    full: bool
    tile: int | None  # index into the tile grid, or None
    unsearched: frozenset[int]  # keys of the tracks no region looks for (FaceTracker.update carries them)


@dataclass(frozen=True)
class ScheduleState:
    """What the controller chose: whole-frame interval (frames), tile stride (frames), native-coverage cycle (s),
    the whole-frame pass's scale (network pixels per frame pixel, 1 = native), the window cap and whether small
    faces get native windows."""

    interval: int
    tile_stride: int
    native_cycle_s: float
    full_scale: float
    window_cap: int  # windows a frame at most (max_windows, halved under the heaviest load)
    native_windows: bool = False  # small faces get native windows (small_face_px; the second thing load takes)
    overlap_regions: bool = False  # overlapping tracks get overlap regions (overlap_windows; the first)


_NATIVE_GATE_SHARE = 0.75  # a small face gets a native window from this share of the gate's face size up
_EWMA = 0.1  # weight of the newest frame in the load average (~10-frame memory)
_SLACK = 0.6  # refine only when load is below budget x this
_HOLD_FRAMES = 15  # frames between two controller moves (let the average settle)
_FULL_SEES_PX = 40.0  # a face at least this big in the whole-frame pass's pixels is found there reliably
# Under the heaviest load the window cap halves up to this many times: with max_windows 24 and a crowd of 24
# tracks, each still gets a window every 8 frames (0.27 s at 30 fps), well inside tracker.max_lost_s (1 s).
_WINDOW_HALVINGS = 3


def _pixels(region: Region) -> int:
    """Network pixels of a region: what a detector call on it costs, roughly."""
    return region.out_w * region.out_h


class DetectionSchedule:
    """Plans and runs a stream's detection frame by frame; see the module docstring. One per stream."""

    def __init__(self, config: ScheduleConfig, nms_iou: float, min_face_px: float, gate_face_px: float = 0.0) -> None:
        """``min_face_px``: the detector's floor (frame pixels); ``gate_face_px``: the quality gate's smallest face
        (shorter side, frame pixels; 0: unknown, the whole-frame pass is then only bounded by ``full_side``)."""
        self._config = config
        self._nms_iou = nms_iou
        self._min_face_px = min_face_px
        self._gate_face_px = gate_face_px
        self._shape: tuple[int, int] | None = None
        self._full: Region | None = None
        self._tiles: list[Region] = []
        self._frame = 0
        self._next_tile = 0
        self._level = 0
        self._load: float | None = None
        self._period: float | None = None
        self._last_pts: float | None = None
        self._since_move = 0
        self._pinned = False

    # ------------------------------------------------------------------------------------------ planning
    def _layout(self, height: int, width: int) -> None:
        """The whole-frame pass and the tiles for frames of (height, width); see the module docstring."""
        cfg = self._config
        self._shape = (height, width)
        self._full = whole_frame(height, width, cfg.full_side)
        tile_h = max(32, round(cfg.tile_px * 9 / 16 / 32) * 32)
        # A native pass already sees everything the tiles would: no tiles then.
        self._tiles = (
            [] if self._full.scale >= 1.0 else tile_grid(height, width, cfg.tile_px, tile_h, cfg.tile_overlap_px)
        )
        if cfg.full_face_px <= 0 or self._gate_face_px <= 0:
            return
        # The pass that shows the smallest face the stream embeds at full_face_px finds every face worth finding
        # on its own. Use it where it costs no more network pixels a frame than full_side's pass and the tiles.
        longer = max(height, width)
        gate = whole_frame(height, width, math.ceil(longer * cfg.full_face_px / self._gate_face_px))
        tiles_cost = _pixels(self._tiles[0]) / cfg.tile_stride if self._tiles else 0.0
        if _pixels(gate) / cfg.interval <= _pixels(self._full) / cfg.interval + tiles_cost:
            self._full, self._tiles = gate, []

    @property
    def state(self) -> ScheduleState:
        interval, stride, cap, native, overlap = self._levels()
        period = self._period or 0.0
        cycle = len(self._tiles) * stride * period
        scale = self._full.scale if self._full is not None else 1.0
        return ScheduleState(interval, stride, cycle, scale, cap, native, overlap)

    def _native_levels(self) -> int:
        """How many levels of native views load can take, where the layout has tiles: first the overlap regions
        (``overlap_windows``: on the bench's dense street they double a frame's detection time, run 19), then
        small faces' native windows (``small_face_px``: ~20% of a 1080p crowd frame's time, run 15)."""
        cfg = self._config
        return int(cfg.overlap_windows) + int(cfg.small_face_px > 0) if self._tiles else 0

    def _levels(self) -> tuple[int, int, int, bool, bool]:
        """(interval, tile stride, window cap, native windows, overlap regions) at the current load level: the
        native views go first (they refine or keep faces already tracked), then the interval stretches, then
        the tile stride doubles, and only then (the windows keep the faces already found) the cap halves."""
        cfg = self._config
        native = self._native_levels()
        level = max(self._level - native, 0)
        span = max(cfg.max_interval - cfg.interval, 0)
        interval = cfg.interval + min(level, span)
        extra = max(level - span, 0)
        doublings = min(extra, self._tile_doublings())
        cap = cfg.max_windows >> (extra - doublings)
        overlap = cfg.overlap_windows and bool(self._tiles) and self._level == 0
        small = cfg.small_face_px > 0 and self._level < native
        return interval, cfg.tile_stride * 2**doublings, max(cap, 1) if cfg.max_windows else 0, small, overlap

    def _tile_doublings(self) -> int:
        """How often the tile stride may double before a native sweep takes longer than ``max_tile_cycle_s``."""
        cfg = self._config
        if not self._tiles or self._period is None or self._period <= 0:
            return 0
        longest = cfg.max_tile_cycle_s / (len(self._tiles) * self._period)  # frames per tile at most
        return max(math.floor(math.log2(max(longest / cfg.tile_stride, 1.0))), 0)

    def _max_level(self) -> int:
        cfg = self._config
        halvings = min(_WINDOW_HALVINGS, max(cfg.max_windows.bit_length() - 1, 0))
        return self._native_levels() + max(cfg.max_interval - cfg.interval, 0) + self._tile_doublings() + halvings

    def plan(self, height: int, width: int, tracks: Predictions) -> Plan:
        """The regions for the next frame of (height, width), given the tracks' predictions."""
        if self._shape != (height, width):
            self._layout(height, width)
        assert self._full is not None
        cfg = self._config
        interval, stride, cap, native, overlap = self._levels()
        boxes = tracks.boxes
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        full = self._frame % interval == 0
        # Faces the whole-frame pass sees at a comfortable size need no window of their own on its frames; a
        # confirmed track matched on each of the last window_stride - 1 frames waits for its window (the Kalman
        # prediction carries it that long); tentative tracks are measured every frame until confirmed.
        seen = (sides * self._full.scale >= _FULL_SEES_PX) if full else np.zeros(len(boxes), bool)
        due = ~seen & (~tracks.confirmed | (tracks.idle >= cfg.window_stride - 1))
        wanted = np.flatnonzero(due)
        regions, windowed = self._windows(boxes[wanted], sides[wanted], height, width, cap, native)
        searched = seen  # a fresh array: the faces the whole-frame pass sees, plus those given a window
        searched[wanted[windowed]] = True
        if overlap:
            regions += overlap_regions(boxes, height, width, self._tiles[0].out_w, self._tiles[0].out_h)
        if full:
            regions.append(self._full)
        tile: int | None = None
        if self._tiles and self._frame % stride == 0:
            tile = self._next_tile % len(self._tiles)
            self._next_tile += 1
            regions.append(self._tiles[tile])
        self._frame += 1
        return Plan(tuple(regions), full, tile, frozenset(tracks.keys[~searched].tolist()))

    def _windows(
        self,
        boxes: NDArray[np.float64],
        sides: NDArray[np.float64],
        height: int,
        width: int,
        cap: int,
        native: bool,
    ) -> tuple[list[Region], NDArray[np.intp]]:
        """Windows for (N, 4) track boxes, at most ``cap``, and the rows that got one: when more are wanted, a
        different run of them (in order of face size) is left out on each frame, so no face goes without one for
        long. (Leaving out the largest every time broke up the tracks of the 150-190 px faces in a crowd of ~25
        tracks: on frames without the whole-frame pass nothing looked for them.)

        Faces under ``small_face_px`` get a native window of ``small_window_px`` (:func:`native_windows`,
        shared by neighbours whose own context lies inside it), the others ``window_context`` x their size
        seen at ``window_px``. The 96 px window shrank a soft 48 px crowd face to ~0.75x and saw it at 0-0.5
        (nothing at all on 6 frames) where the native 640x352 tile saw 0.92; a native 192 px window sees it at
        0.5-0.9 on every frame. Native at context 2 (116-138 px) did not: the network needs the surroundings.
        Limited to layouts with tiles and faces near the gate's size, they cost a 1080p crowd frame ~21% more
        time (all faces under 80 px: ~30%) and 640x360 or 720p nothing (bench/RESULTS.md, issue 13 run 15)."""
        cfg = self._config
        order = np.argsort(sides, kind="stable")
        over = len(order) - cap
        if over > 0:
            order = np.delete(order, (self._frame * over + np.arange(over)) % len(order))
        chosen = boxes[order]
        width_px, height_px = chosen[:, 2] - chosen[:, 0], chosen[:, 3] - chosen[:, 1]
        # Native windows only where the layout has tiles (``native``, and not under load): elsewhere the
        # whole-frame pass shows every face the gate could pass with all its context every few frames (640x360,
        # 720p), so a window's miss costs a frame or two, not a tile cycle. And only for faces that may grow to
        # the gate (shorter side >= 3/4 of it): a smaller one is never embedded, and the tiles still find it.
        small = (
            native
            & (np.maximum(width_px, height_px) < cfg.small_face_px)
            & (np.minimum(width_px, height_px) >= _NATIVE_GATE_SHARE * self._gate_face_px)
        )
        regions = windows_around(chosen[~small], height, width, cfg.window_context, cfg.window_px)
        regions += native_windows(chosen[small], height, width, cfg.small_window_px, cfg.window_context, share=True)
        return regions, order

    def detect(self, detector: FaceDetector, image: ImageBGR, plan: Plan) -> Detections:
        """Run a plan on one (H, W, 3) uint8 BGR frame: detections in frame pixels, overlaps merged."""
        return detect_regions(detector, image, plan.regions, self._nms_iou, self._min_face_px)

    # ------------------------------------------------------------------------------------------ control
    def pin_level(self, level: int) -> None:
        """Fix the load level (0: the configured interval and stride) and stop adapting: files read as fast as
        possible (``adapt_files``), and offline comparisons."""
        self._level = max(level, 0)
        self._pinned = True

    def observe(self, pts_s: float, cost_s: float, backlog: float | None) -> None:
        """After each frame: its media time, the wall seconds processing it took, and the decoded backlog as a
        fraction of the buffer (None where a full buffer is normal, i.e. unpaced files)."""
        if self._last_pts is not None and pts_s > self._last_pts:
            dt = pts_s - self._last_pts
            self._period = dt if self._period is None else (1 - _EWMA) * self._period + _EWMA * dt
        self._last_pts = pts_s
        if self._period is None:
            return
        load = cost_s / self._period
        self._load = load if self._load is None else (1 - _EWMA) * self._load + _EWMA * load
        self._since_move += 1
        if self._pinned or self._since_move < _HOLD_FRAMES:
            return
        budget = self._config.budget
        if (self._load > budget or (backlog is not None and backlog >= 0.5)) and self._level < self._max_level():
            self._level += 1
            self._since_move = 0
        elif self._load < budget * _SLACK and (backlog is None or backlog < 0.25) and self._level > 0:
            self._level -= 1
            self._since_move = 0
