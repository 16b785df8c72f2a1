"""From detections and tracks to the regions hidden in each frame.

A region is hidden for one of five reasons (``kind``): ``detected`` (a detection at or above the score
threshold, or a weaker one that extends a confirmed track), ``interpolated`` (a track's box across frames the
detector missed), ``extended`` (before a track's first or after its last detection), ``held`` (a detection
kept for a few neighbouring frames) and ``fallback`` (an unsure detection hidden as a whole head). Regions
may overlap; overlapping is harmless, a gap is not.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from streamproc.redact.analyse import Analysis
from streamproc.redact.settings import RedactDetectionConfig, RedactRegionConfig, RedactTrackingConfig

Kind = Literal["detected", "interpolated", "extended", "held", "fallback"]
KINDS: tuple[Kind, ...] = ("detected", "interpolated", "extended", "held", "fallback")


@dataclass(frozen=True)
class Region:
    """A rectangle to hide: integer pixels, x2/y2 exclusive, clipped to the frame. ``score``: the detector
    score of the detection it comes from (for interpolation, the weaker end)."""

    x1: int
    y1: int
    x2: int
    y2: int
    kind: Kind
    score: float
    track_id: int

    @property
    def area(self) -> int:
        return max(0, self.x2 - self.x1) * max(0, self.y2 - self.y1)


@dataclass
class Plan:
    """Regions per frame (index = decode order), the ids of tracks kept visible, and counts by kind."""

    regions: list[list[Region]]
    tracks: int
    kept_tracks: frozenset[int] = frozenset()
    counts: dict[str, int] = field(default_factory=dict)

    def faces_per_frame(self) -> list[int]:
        """Distinct faces hidden in each frame (overlapping regions of one face count once)."""
        return [len(_faces(rs)) for rs in self.regions]

    def interpolation_only_frames(self) -> list[int]:
        """Frames where at least one face is hidden without a detection of its own in that frame."""
        return [i for i, rs in enumerate(self.regions) if any(r.kind not in _DETECTED for r in _faces(rs))]


_DETECTED = ("detected", "fallback")


def _overlap(a: Region, b: Region) -> float:
    """Intersection over the smaller area."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / max(1, min(a.area, b.area))


def _faces(regions: list[Region]) -> list[Region]:
    """One region per face: detections first, then held regions that overlap no face already counted."""
    faces: list[Region] = []
    for r in sorted(regions, key=lambda r: r.kind not in _DETECTED):
        if all(_overlap(r, f) < 0.5 for f in faces):
            faces.append(r)
    return faces


def _pad(
    box: np.ndarray, pad: float, width: int, height: int, kind: Kind, score: float, track_id: int
) -> Region | None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if not (math.isfinite(w) and math.isfinite(h)) or w <= 0 or h <= 0:
        return None
    px, py = pad * w, pad * h
    r = Region(
        max(0, math.floor(x1 - px)),
        max(0, math.floor(y1 - py)),
        min(width, math.ceil(x2 + px)),
        min(height, math.ceil(y2 + py)),
        kind,
        score,
        track_id,
    )
    return r if r.area > 0 else None


def plan_regions(
    analysis: Analysis,
    detection: RedactDetectionConfig,
    tracking: RedactTrackingConfig,
    regions: RedactRegionConfig,
    keep_tracks: frozenset[int] = frozenset(),
) -> Plan:
    """Every region to hide in every frame; tracks in ``keep_tracks`` (an authorised kept subject) are left out."""
    info, frames = analysis.info, analysis.frames
    n = len(frames)
    out: list[list[Region]] = [[] for _ in range(n)]
    times = [f.t_s for f in frames]
    dt = 1.0 / info.fps if info.fps > 0 else 1.0 / 30

    def add(i: int, box: np.ndarray, kind: Kind, score: float, track_id: int, pad: float) -> None:
        if 0 <= i < n:
            r = _pad(box, pad, info.width, info.height, kind, score, track_id)
            if r is not None:
                out[i].append(r)

    by_track: dict[int, list[tuple[int, np.ndarray, float]]] = defaultdict(list)
    for i, f in enumerate(frames):
        for box, score, tid in zip(f.boxes, f.scores.tolist(), f.track_ids.tolist(), strict=True):
            if tid and tid in keep_tracks:
                continue
            if tid:
                by_track[tid].append((i, box, score))
            if score >= detection.score_threshold or tid:
                add(i, box, "detected", score, tid, regions.padding)
                for k in range(1, tracking.hold_frames + 1):
                    grow = regions.padding + regions.extend_padding * k * dt
                    add(i - k, box, "held", score, tid, grow)
                    add(i + k, box, "held", score, tid, grow)
            elif score >= detection.low_score or (regions.fallback_heads and score >= regions.fallback_floor):
                # Unsure and not (yet) part of a track: the first frames of a track land here before it
                # is confirmed. Hidden (as a head region when fallback is on) rather than guessed away.
                pad = regions.head_padding if regions.fallback_heads else regions.padding
                add(i, box, "fallback" if regions.fallback_heads else "detected", score, 0, pad)

    for tid, obs in by_track.items():
        for (ia, ba, sa), (ib, bb, sb) in itertools.pairwise(obs):
            if ib - ia > 1 and times[ib] - times[ia] <= tracking.max_gap_s + 1e-6:
                for i in range(ia + 1, ib):
                    w = (i - ia) / (ib - ia)
                    box = (1 - w) * ba + w * bb
                    distance_s = min(i - ia, ib - i) * dt
                    add(i, box, "interpolated", min(sa, sb), tid, regions.padding + regions.extend_padding * distance_s)
        steps = math.ceil(tracking.extend_s / dt) if tracking.extend_s > 0 else 0
        first_i, first_box, first_score = obs[0]
        last_i, last_box, last_score = obs[-1]
        for k in range(1, steps + 1):
            grow = regions.padding + regions.extend_padding * k * dt
            add(first_i - k, first_box, "extended", first_score, tid, grow)
            add(last_i + k, last_box, "extended", last_score, tid, grow)

    counts: dict[str, int] = {kind: sum(1 for rs in out for r in rs if r.kind == kind) for kind in KINDS}
    return Plan(regions=out, tracks=len(by_track), kept_tracks=keep_tracks, counts=counts)
