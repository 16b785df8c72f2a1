"""Landmarks found at native resolution for the chips a stream embeds.

Where the detection schedule (:mod:`streamproc.stream.schedule`) found a face in a downscaled view (a track's
window seen at ``window_px``, or the whole-frame pass), its five landmarks are as coarse as that view: a 120 px
face in a 96 px window is ~48 network px. The chip is cut from the native frame, but with those landmarks. So
each face that becomes its track's best so far keeps a native view of itself (its surroundings cut from the
frame, at most :data:`VIEW_PX` a side), and a shot chosen for embedding is detected again in it, once, before
it is embedded: one small detector call per embedded shot (batched; a few per track), not per frame. On the
bench's synthetic 1080p street (bench/RESULTS.md, issue 13 run 18) the schedule's chosen chips then matched
another photo of the person for 145 of 151 walkers (143 without; the every-frame, native-resolution reference
146), for ~2% of the densest clip's frame rate. The stage metric ``align`` includes this time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from streamproc.protocols import FaceDetector
from streamproc.types import ChipRGB, ImageBGR
from streamproc.vision.align import ChipTemplate, align
from streamproc.vision.regions import crop, native_windows
from streamproc.vision.track import iou_matrix

VIEW_PX = 256  # longest side the detector sees of a view: larger surroundings are downscaled to it
VIEW_MIN_PX = 192  # a view is at least this many frame pixels a side (a small face keeps a tile's context)
VIEW_CONTEXT = 2.0  # ... and at least this many times the face box's longer side
MATCH_IOU = 0.5  # the face found again must overlap the first box this much; else the first landmarks stay


@dataclass(frozen=True)
class NativeView:
    """A face's surroundings, cut from its frame when it became its track's best so far."""

    image: ImageBGR = field(repr=False)  # (h, w, 3) uint8 BGR, its own copy (the frame's buffer is reused)
    box: NDArray[np.float32]  # (4,) x1y1x2y2 of the face as first detected, in view pixels
    landmarks: NDArray[np.float32]  # (5, 2) as first detected, in view pixels


def cut_view(frame: ImageBGR, box: NDArray[np.float32], landmarks: NDArray[np.float32]) -> NativeView:
    """The native view around one face of an (H, W, 3) uint8 BGR frame; ``box`` (4,) and ``landmarks`` (5, 2)
    in frame pixels."""
    height, width = frame.shape[:2]
    region = native_windows(box[None], height, width, VIEW_MIN_PX, VIEW_CONTEXT)[0]
    side = region.x1 - region.x0
    if side > VIEW_PX:
        region = replace(region, out_w=VIEW_PX, out_h=VIEW_PX)
    image = crop(frame, region)
    if np.shares_memory(image, frame):
        image = image.copy()
    scale = np.float32(region.out_w / side)
    offset = np.array([region.x0, region.y0], np.float32)
    view_box = ((box.reshape(2, 2) - offset) * scale).reshape(4).astype(np.float32)
    return NativeView(image, view_box, ((landmarks - offset) * scale).astype(np.float32))


def refined_chips(detector: FaceDetector, views: Sequence[NativeView], template: ChipTemplate) -> list[ChipRGB]:
    """One (S, S, 3) uint8 RGB chip per view, aligned from the landmarks the detector finds for its face there
    (one batched call), or from the first landmarks where it does not find the face again."""
    if not views:
        return []
    found = detector.detect([v.image for v in views])
    chips = []
    for view, dets in zip(views, found, strict=True):
        points = view.landmarks
        if len(dets):
            overlap = iou_matrix(view.box[None], dets.boxes)[0]
            best = int(overlap.argmax())
            if overlap[best] >= MATCH_IOU:
                points = dets.landmarks[best]
        chips.append(align(view.image, points, template))
    return chips
