"""Detection in parts of a frame: windows around known faces, tiles at native size, a downscaled whole frame.

Why: a 1920x1080 frame at native size costs ~130 ms on two CPU cores, far over a 33 ms frame budget, and
downscaling the whole frame loses small faces. A :class:`Region` is a rectangle of the frame plus the size the
network sees it at; :func:`detect_regions` resizes every region, sends regions of equal size through the
detector as one batch, maps boxes and landmarks back to **frame pixels** and merges overlaps with NMS. So every
detection, whatever resolution found it, is expressed at native resolution and alignment / quality work on
native-resolution crops.

A face cut by a region's edge (an edge inside the frame, not the frame's own border) is dropped: it is a
fragment, and the tile next to it, the window around it or the whole-frame pass finds it whole. RetinaFace's box
for the part it sees may end a few pixels short of the edge (2-13 px in the 1080p street clip), so a box is
also cut when the edge runs close to its landmarks. In a whole face the highest landmark lies at least 0.28 of
the box's longer side below the box's top, and the lowest at least 0.07 above its bottom (99% over 0.15; 1,290
faces of the bench's 1080p clips), so an edge less than 0.2 of that side above the highest landmark, or 0.1
below the lowest, passes through the face. Only edges above and below: a profile's landmarks reach its box's
sides.

Two boxes of which the smaller lies mostly inside a much larger one are one face, not two (see
:func:`drop_contained`): at native size a face beyond the detector's largest anchor (~512 px for RetinaFace)
falls apart into part-boxes inside the whole face that the downscaled pass finds, and a low-score box around a
group of heads encloses the real, sharper face. IoU cannot see either (a part inside a whole overlaps it at IoU
0.2-0.3); overlap over the *smaller* box's area can. Of the two, the higher score stays, as in NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.protocols import FaceDetector
from streamproc.types import Detections, ImageBGR
from streamproc.vision.detect import nms

CUT_MARGIN_PX = 2.0  # a box this close (network pixels) to a cut edge touches it
# A cut edge this close to a box's landmarks (shares of its longer side) passes through the face: above its
# eyes, below its mouth (see the module docstring).
CUT_ABOVE_LANDMARKS = 0.2
CUT_BELOW_LANDMARKS = 0.1
CONTAINED_SHARE = 0.6  # this share of a box's area inside another box makes them one face (if sizes differ so)
CONTAINED_AREA_RATIO = 1.5  # ... and the outer box has at least this many times the inner box's area
STRADDLE_SHARE = 0.2  # two better boxes each covering this share of a box's area: it lies between two faces


@dataclass(frozen=True)
class Region:
    """A rectangle ``[x0, x1) x [y0, y1)`` of the frame, seen by the network at ``out_w`` x ``out_h`` pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    out_w: int
    out_h: int

    def __post_init__(self) -> None:
        if self.x1 <= self.x0 or self.y1 <= self.y0 or self.out_w < 1 or self.out_h < 1:
            raise ValueError(f"empty region {self}")

    @property
    def scale(self) -> float:
        """Network pixels per frame pixel (< 1: downscaled; > 1: upscaled)."""
        return self.out_w / (self.x1 - self.x0)


def whole_frame(height: int, width: int, long_side: int | None) -> Region:
    """The whole frame, downscaled so its longer side is ``long_side`` (None or larger: native size)."""
    scale = 1.0 if long_side is None or long_side >= max(height, width) else long_side / max(height, width)
    return Region(0, 0, width, height, max(1, round(width * scale)), max(1, round(height * scale)))


def tile_grid(height: int, width: int, tile_w: int, tile_h: int, overlap: int) -> list[Region]:
    """Native-size tiles of ``tile_w`` x ``tile_h`` covering the frame, neighbours overlapping by at least
    ``overlap`` pixels (so any face up to ``overlap`` px lies whole in one tile); all tiles share one size, so
    they batch. A frame smaller than a tile is one tile of its own size."""
    tw, th = min(tile_w, width), min(tile_h, height)
    xs = _starts(width, tw, overlap)
    ys = _starts(height, th, overlap)
    return [Region(x, y, x + tw, y + th, tw, th) for y in ys for x in xs]  # row-major


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if tile >= length:
        return [0]
    count = math.ceil((length - overlap) / max(tile - overlap, 1))
    count = max(count, 2)
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def windows_around(
    boxes: NDArray[np.floating], height: int, width: int, context: float, size: int, min_side: int = 24
) -> list[Region]:
    """One square window per (N, 4) x1y1x2y2 box: ``context`` times the box's longer side, centred on it,
    shifted (not cut) to stay inside the frame, seen by the network at ``size`` x ``size``.

    A 20 px face with context 2 becomes a 40 px window upscaled to ``size``; a 400 px face, an 800 px window
    downscaled to it: either way the face fills about ``size / context`` network pixels, where the detector
    is at its best (at 96 px and context 2.5, large faces shrank to ~25-38 px and were missed frame after
    frame in the 1080p crowd clip; context 2 keeps them).
    """
    out: list[Region] = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        side = min(max(context * max(x2 - x1, y2 - y1), float(min_side)), float(min(height, width)))
        s = math.ceil(side)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x0 = int(min(max(round(cx - s / 2), 0), width - s))
        y0 = int(min(max(round(cy - s / 2), 0), height - s))
        out.append(Region(x0, y0, x0 + s, y0 + s, size, size))
    return out


def native_windows(
    boxes: NDArray[np.floating], height: int, width: int, side: int, context: float = 2.0, share: bool = False
) -> list[Region]:
    """One square window per (N, 4) x1y1x2y2 box at **native** resolution (network pixels = frame pixels):
    ``side`` px, or ``context`` times the box's longer side where that is more, centred on the box and shifted
    (not cut) to stay inside the frame; a frame smaller than ``side`` gives a window of its shorter side.

    For small faces: a small, soft face is found at native size by a native tile with the scene around it,
    while a tight window (:func:`windows_around`, face filling half of it) scores the same face 0-0.5 at the
    same scale. A fixed native side gives the network the same view as a tile, only smaller: the face keeps
    its pixels and the stride-16/32 features see the surroundings they were trained with.
    """
    out: list[Region] = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        reach = context * max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if share and any(
            r.x0 <= cx - reach / 2 and r.y0 <= cy - reach / 2 and r.x1 >= cx + reach / 2 and r.y1 >= cy + reach / 2
            for r in out
        ):
            continue
        s = min(max(side, math.ceil(reach)), height, width)
        x0 = int(min(max(round(cx - s / 2), 0), width - s))
        y0 = int(min(max(round(cy - s / 2), 0), height - s))
        out.append(Region(x0, y0, x0 + s, y0 + s, s, s))
    return out


def overlap_regions(
    boxes: NDArray[np.floating], height: int, width: int, tile_w: int, tile_h: int, share: float = 0.05
) -> list[Region]:
    """One native region of a tile's size around each pair of (N, 4) x1y1x2y2 boxes that overlap by at least
    ``share`` of the smaller box's area, centred on the pair, shifted (not cut) to stay inside the frame; a
    pair larger than a tile gets a region around it (plus 16 px a side) seen at the tile's size. A pair inside
    a region already made gets none.

    Why: a face half hidden behind a nearer one is one box over the nearer face in the downscaled pass and in
    the windows (96 px or 160 px around either face, IoU 0.25-0.49 with the hidden one), and native square
    windows of 192-512 px around it find it on some offsets and not others; a native 640x360 view of the pair
    found each of four such faces (IoU 0.75-0.95), like the native full frame (bench/RESULTS.md, issue 13 run
    19).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) < 2 or tile_w > width or tile_h > height:
        return []
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 0.0)
    inter = _intersections(b)
    overlapping = np.triu(inter >= share * np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9), 1)
    out: list[Region] = []
    for i, j in zip(*np.nonzero(overlapping), strict=True):
        x1, y1 = min(b[i, 0], b[j, 0]), min(b[i, 1], b[j, 1])
        x2, y2 = max(b[i, 2], b[j, 2]), max(b[i, 3], b[j, 3])
        if any(r.x0 <= x1 and r.y0 <= y1 and r.x1 >= x2 and r.y1 >= y2 for r in out):
            continue
        w = min(max(tile_w, math.ceil(x2 - x1) + 32), width)
        h = min(max(tile_h, math.ceil(y2 - y1) + 32), height)
        scale = min(tile_w / w, tile_h / h)  # 1 unless the pair is larger than a tile
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        x0 = int(min(max(round(cx - w / 2), 0), width - w))
        y0 = int(min(max(round(cy - h / 2), 0), height - h))
        out.append(Region(x0, y0, x0 + w, y0 + h, max(round(w * scale), 1), max(round(h * scale), 1)))
    return out


def crop(image: ImageBGR, region: Region) -> ImageBGR:
    """The region's pixels resized to the network size: (out_h, out_w, 3) uint8 BGR."""
    part = image[region.y0 : region.y1, region.x0 : region.x1]
    if part.shape[1] == region.out_w and part.shape[0] == region.out_h:
        return np.ascontiguousarray(part)
    if region.scale >= 1:
        return np.asarray(cv2.resize(part, (region.out_w, region.out_h), interpolation=cv2.INTER_LINEAR), np.uint8)
    return shrink(part, region.out_w, region.out_h)


def shrink(image: ImageBGR, width: int, height: int) -> ImageBGR:
    """Downscale (H, W, 3) uint8 BGR to ``width`` x ``height`` with area averaging, fast: halve while the size
    is still twice the target (bilinear at exactly half size averages 2x2 blocks, ~0.4 ms for 1080p), then one
    area resize for the rest. OpenCV's area resize has a fast path only for 2x, so 1920x1080 -> 640x360 in one
    area step costs ~4 ms on these cores against ~1.5 ms this way."""
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        half = (image.shape[1] // 2, image.shape[0] // 2)
        image = np.asarray(cv2.resize(image, half, interpolation=cv2.INTER_LINEAR), np.uint8)
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8)


def to_frame(dets: Detections, region: Region, height: int, width: int) -> Detections:
    """Detections in a region's network pixels -> frame pixels, without the fragments cut by inner edges."""
    if len(dets) == 0:
        return dets
    b = dets.boxes
    keep = np.ones(len(dets), bool)
    if region.x0 > 0:
        keep &= b[:, 0] > CUT_MARGIN_PX
    if region.x1 < width:
        keep &= b[:, 2] < region.out_w - CUT_MARGIN_PX
    if region.y0 > 0 or region.y1 < height:  # an inner edge above or below: the landmark test too
        longer = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        marks_y = dets.landmarks[:, :, 1]
        if region.y0 > 0:
            keep &= (b[:, 1] > CUT_MARGIN_PX) & (marks_y.min(axis=1) > CUT_ABOVE_LANDMARKS * longer)
        if region.y1 < height:
            keep &= (b[:, 3] < region.out_h - CUT_MARGIN_PX) & (
                marks_y.max(axis=1) < region.out_h - CUT_BELOW_LANDMARKS * longer
            )
    if not keep.all():  # most regions lose no box: no copy then
        dets = dets.select(keep)
        if len(dets) == 0:
            return dets
    sx = (region.x1 - region.x0) / region.out_w
    sy = (region.y1 - region.y0) / region.out_h
    scale = np.array([sx, sy], np.float32)
    offset = np.array([region.x0, region.y0], np.float32)
    # float32 in, float32 out: the arithmetic keeps the dtype, so no conversion copies.
    boxes = (dets.boxes.reshape(-1, 2, 2) * scale + offset).reshape(-1, 4)
    points = dets.landmarks * scale + offset
    return Detections(boxes, dets.scores, points)


def _intersections(b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, N) intersection areas of (N, 4) x1y1x2y2 boxes with each other."""
    iw = np.maximum(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0.0)
    ih = np.maximum(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0.0)
    return np.asarray(iw * ih, np.float64)


def drop_contained(
    dets: Detections, share: float = CONTAINED_SHARE, area_ratio: float = CONTAINED_AREA_RATIO
) -> Detections:
    """Greedy suppression on containment, best score first: a box is dropped when at least ``share`` of the
    smaller box's area of the pair lies inside the other and the larger has at least ``area_ratio`` times the
    smaller's area, the other scoring higher. Two neighbouring faces of similar size (overlap over the smaller
    box 0.4-0.6 in a crowd) are left to IoU NMS; a part inside a whole face, or a face inside a loose box
    around several heads, are not two faces. Order kept (NMS output is by descending score)."""
    n = len(dets)
    if n < 2:
        return dets
    order = np.argsort(-dets.scores, kind="stable")
    b = dets.boxes[order].astype(np.float64)
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    inter = _intersections(b)
    small = np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    large = np.maximum(area[:, None], area[None, :])
    contained = (inter >= share * small) & (large >= area_ratio * small)
    keep = np.ones(n, bool)
    for i in range(n):
        if keep[i]:
            keep[i + 1 :] &= ~contained[i, i + 1 :]
    return dets.select(np.sort(order[keep]))


def drop_straddling(dets: Detections, share: float = STRADDLE_SHARE) -> Detections:
    """Drop every box that two higher-scoring boxes each cover by at least ``share`` of its area.

    RetinaFace fires on the gap between two faces side by side: on the Hamilton clip a box made of half of each
    of two people scores 0.60-0.92 (the two real faces 0.92-1.0), 0.81-0.88 on 5 of its frames, above the
    quality gate's score bar. Its chip mixes two people and an event for it would point between them. On every
    third frame of the bench's clips this box is the only one of score >= 0.8 the rule drops; in the 8,725
    stills of ../shared it drops a box in 63, and the eight looked at by eye were all such boxes (bench/RESULTS.md,
    issue 13 run 14). A face partly behind one
    neighbour is kept; one with a fifth or more of it behind each of two better faces is dropped as no single
    person's face. Order kept."""
    n = len(dets)
    if n < 3:
        return dets
    b = dets.boxes.astype(np.float64)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    inter = _intersections(b)
    better = dets.scores[None, :] > dets.scores[:, None]  # [i, j]: box j scores higher than box i
    covering = (inter >= share * area[:, None]) & better
    return dets.select(np.flatnonzero(covering.sum(axis=1) < 2))


def merge(parts: Sequence[Detections], iou: float, min_face_px: float = 0.0) -> Detections:
    """One set of frame detections from overlapping parts: greedy NMS, best score first, faces of at least
    ``min_face_px`` (shorter side, frame pixels), then boxes that are part of a larger face or enclose a
    better one dropped (:func:`drop_contained`). Order of the result: by descending score."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    joined = Detections(
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.landmarks for p in parts]),
    )
    kept = joined.select(nms(joined.boxes, joined.scores, iou))
    return drop_contained(kept.select(np.flatnonzero(kept.sizes >= min_face_px)))


def detect_regions(
    detector: FaceDetector, image: ImageBGR, regions: Sequence[Region], iou: float, min_face_px: float = 0.0
) -> Detections:
    """Detect in every region of one (H, W, 3) uint8 BGR frame with one ``detect`` call (the detector batches
    regions of equal network size) and merge the results in frame pixels."""
    if not regions:
        return Detections.empty()
    height, width = image.shape[:2]
    found = detector.detect([crop(image, r) for r in regions])
    return merge([to_frame(d, r, height, width) for d, r in zip(found, regions, strict=True)], iou, min_face_px)
