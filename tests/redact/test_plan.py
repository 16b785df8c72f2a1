"""Planning regions from detections: padding, interpolation across gaps, extension, kept tracks."""

from __future__ import annotations

import numpy as np

from streamproc.redact.analyse import Analysis, ClipInfo, FrameFaces
from streamproc.redact.plan import plan_regions
from streamproc.redact.settings import RedactConfig

INFO = ClipInfo(width=640, height=360, fps=10.0, declared_frames=30, duration_s=3.0, audio_streams=0)


def frame(t: int, boxes: list[tuple[float, float, float, float]], score: float = 0.9, tid: int = 1) -> FrameFaces:
    n = len(boxes)
    return FrameFaces(
        t / 10,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.full(n, score, np.float32),
        np.full(n, tid, np.int64),
        np.zeros((n, 5, 2), np.float32),
    )


def test_a_track_is_interpolated_across_a_gap_and_extended_at_both_ends() -> None:
    cfg = RedactConfig()
    # detected in frames 10-12 and 18-20 at x moving right; missed in 13-17
    frames = [
        frame(t, [(100 + 10 * t, 100, 150 + 10 * t, 160)] if t in (10, 11, 12, 18, 19, 20) else []) for t in range(30)
    ]
    plan = plan_regions(Analysis(INFO, frames), cfg.detection, cfg.tracking, cfg.regions)
    for t in range(13, 18):
        kinds = {r.kind for r in plan.regions[t]}
        assert "interpolated" in kinds, t
        centre = next((r.x1 + r.x2) / 2 for r in plan.regions[t] if r.kind == "interpolated")
        assert abs(centre - (125 + 10 * t)) <= 2  # on the straight line between the two detections
    assert {r.kind for r in plan.regions[6]} == {"extended"}  # 0.5 s before the first detection
    assert {r.kind for r in plan.regions[25]} == {"extended"}
    assert plan.regions[4] == [] and plan.regions[27] == []
    assert set(range(13, 18)) <= set(plan.interpolation_only_frames())
    assert plan.faces_per_frame()[15] == 1


def test_padding_grows_and_clips_to_the_frame() -> None:
    cfg = RedactConfig()
    plan = plan_regions(
        Analysis(INFO, [frame(0, [(0, 300, 100, 360)], tid=0)]), cfg.detection, cfg.tracking, cfg.regions
    )
    (r,) = plan.regions[0]
    assert (r.x1, r.y1, r.x2, r.y2) == (0, 282, 130, 360)


def test_unsure_untracked_detections_are_dropped_unless_fallback_heads() -> None:
    cfg = RedactConfig()
    weak = [frame(0, [(200, 100, 240, 150)], score=0.1, tid=0)]
    off = cfg.regions.model_copy(update={"fallback_heads": False})
    assert plan_regions(Analysis(INFO, weak), cfg.detection, cfg.tracking, off).regions[0] == []
    heads = cfg.regions.model_copy(update={"fallback_heads": True})
    (r,) = plan_regions(Analysis(INFO, weak), cfg.detection, cfg.tracking, heads).regions[0]
    assert r.kind == "fallback" and r.x2 - r.x1 == 40 + 2 * 32


def test_a_kept_track_is_not_hidden_but_others_are() -> None:
    cfg = RedactConfig()
    frames = [
        FrameFaces(
            0.0,
            np.array([[10, 10, 60, 70], [300, 10, 350, 70]], np.float32),
            np.array([0.9, 0.9], np.float32),
            np.array([1, 2], np.int64),
            np.zeros((2, 5, 2), np.float32),
        )
    ]
    plan = plan_regions(Analysis(INFO, frames), cfg.detection, cfg.tracking, cfg.regions, frozenset({1}))
    assert [r.track_id for r in plan.regions[0]] == [2]
