"""Detection in regions: geometry of windows and tiles, and real detections mapped back to frame pixels."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.types import Detections
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.imageio import read_image
from streamproc.vision.regions import (
    Region,
    detect_regions,
    drop_contained,
    drop_straddling,
    merge,
    shrink,
    tile_grid,
    to_frame,
    whole_frame,
    windows_around,
)
from streamproc.vision.track import iou_matrix


def test_tiles_cover_the_frame_with_the_promised_overlap() -> None:
    tiles = tile_grid(1080, 1920, 640, 352, 64)
    assert len({(t.out_w, t.out_h) for t in tiles}) == 1  # one size: one batch
    covered = np.zeros((1080, 1920), bool)
    for t in tiles:
        covered[t.y0 : t.y1, t.x0 : t.x1] = True
        assert t.scale == 1.0 and t.x0 >= 0 and t.x1 <= 1920 and t.y0 >= 0 and t.y1 <= 1080
    assert covered.all()
    xs = sorted({t.x0 for t in tiles})
    assert all(b - a <= 640 - 64 for a, b in itertools.pairwise(xs))  # neighbours overlap >= 64 px
    assert tile_grid(360, 640, 640, 352, 64) != [] and len(tile_grid(300, 500, 640, 352, 64)) == 1


@pytest.mark.parametrize(
    ("size", "out"), [((1080, 1920), (640, 360)), ((721, 1283), (96, 96)), ((300, 500), (400, 240))]
)
def test_shrink_matches_an_area_resize(size: tuple[int, int], out: tuple[int, int]) -> None:
    """Halving first, then one area step: the shape asked for and within a level or so of a one-step area
    resize on a textured image (the detector sees the same image, faster)."""
    noise = np.random.default_rng(0).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    image = np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.5), np.uint8)
    small = shrink(image, *out)
    assert small.shape == (out[1], out[0], 3) and small.dtype == np.uint8
    reference = cv2.resize(image, out, interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(small.astype(np.int16) - reference).mean() < 1.6  # one bilinear step: ~2, nearest: ~6.5


def test_windows_are_square_centred_and_shifted_inside_the_frame() -> None:
    boxes = np.array([[100, 100, 140, 150], [1900, 1060, 1915, 1075], [0, 0, 8, 8]], np.float64)
    centred, corner, tiny = windows_around(boxes, 1080, 1920, context=2.5, size=128)
    assert centred.x1 - centred.x0 == centred.y1 - centred.y0 == 125  # 2.5 x the longer side (50)
    assert abs((centred.x0 + centred.x1) / 2 - 120) <= 1 and abs((centred.y0 + centred.y1) / 2 - 125) <= 1
    assert corner.x1 == 1920 and corner.y1 == 1080  # shifted in, not cut
    assert tiny.x1 - tiny.x0 == 24 and tiny.out_w == 128  # never below the minimum window


def test_mapping_back_scales_offsets_and_drops_fragments_at_cut_edges() -> None:
    region = Region(100, 200, 300, 400, 100, 100)  # 2x downscale, an inner region on every side
    dets = Detections(
        np.array([[10, 10, 30, 30], [0, 40, 20, 60]], np.float32),  # the second touches the left cut edge
        np.array([0.9, 0.9], np.float32),
        np.tile(np.array([[20, 20]], np.float32), (2, 5, 1)),
    )
    out = to_frame(dets, region, 1080, 1920)
    assert len(out) == 1
    np.testing.assert_allclose(out.boxes[0], [120, 220, 160, 260])
    np.testing.assert_allclose(out.landmarks[0], np.tile([[140, 240]], (5, 1)))
    # at the frame's own border nothing is cut: a face touching it is kept
    edge = to_frame(dets, Region(0, 200, 200, 400, 100, 100), 1080, 1920)
    assert len(edge) == 2


def test_a_box_short_of_a_cut_edge_is_cut_when_the_edge_runs_through_its_landmarks() -> None:
    """A box 5 px short of the region's inner bottom edge: kept when its landmarks sit where a whole face's do
    (eyes a third down, mouth a quarter up), dropped when the lowest lies at the edge (the mouth of a face whose
    chin the edge cut off). Above, mirrored: the eyes above the box's top is a face cut at the forehead."""
    region = Region(0, 200, 200, 400, 200, 200)  # native, inner edges at the top and the bottom
    whole = np.array([[70, 40], [110, 40], [90, 60], [75, 72], [105, 72]], np.float32)  # in a 60x90 box
    box = np.array([60, 5, 120, 95], np.float32)

    def kept(box_net: np.ndarray, marks: np.ndarray) -> int:
        dets = Detections(box_net[None], np.array([0.9], np.float32), marks[None])
        return len(to_frame(dets, region, 1080, 1920))

    low, down = np.array([0, 100, 0, 100], np.float32), np.array([0, 100], np.float32)
    assert kept(box + low, whole + down) == 1  # bottom at 195: 5 px short of the edge, a whole face
    cut_chin = whole + down
    cut_chin[3:, 1] = 196  # mouth corners at the edge: the face goes on below it
    assert kept(box + low, cut_chin) == 0
    assert kept(box, whole) == 1  # top at 5 px below the upper edge, eyes 40 px down: whole
    cut_brow = whole.copy()
    cut_brow[:2, 1] = 8  # eyes at the top edge: the forehead is above it
    assert kept(box, cut_brow) == 0


def test_merge_keeps_one_box_per_face_and_applies_the_size_floor() -> None:
    a = Detections(np.array([[0, 0, 40, 40]], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32))
    b = Detections(
        np.array([[1, 1, 41, 41], [100, 100, 105, 105]], np.float32),
        np.array([0.95, 0.99], np.float32),
        np.zeros((2, 5, 2), np.float32),
    )
    out = merge([a, b], iou=0.4, min_face_px=12)
    assert len(out) == 1 and out.scores[0] == pytest.approx(0.95)


def _dets(boxes: Sequence[Sequence[float]], scores: Sequence[float]) -> Detections:
    return Detections(
        np.array(boxes, np.float32), np.array(scores, np.float32), np.zeros((len(scores), 5, 2), np.float32)
    )


def test_a_part_inside_a_whole_face_is_not_a_second_face() -> None:
    """A 400 px face found whole (score 0.98) and an eye-and-nose part of it (0.79) that the native pass
    found: IoU 0.09, so NMS keeps both; contained, the part goes."""
    whole, part = [1300, 25, 1800, 820], [1420, 90, 1520, 220]
    out = drop_contained(_dets([whole, part], [0.98, 0.79]))
    assert len(out) == 1 and out.boxes[0].tolist() == whole
    assert len(merge([_dets([part], [0.79]), _dets([whole], [0.98])], iou=0.4)) == 1


def test_a_loose_box_around_a_better_face_goes_and_the_face_stays() -> None:
    """Reversed: a sharp face (1.00) inside a loose low-score box around two heads (0.67): the box goes."""
    face, loose = [952, 90, 1150, 415], [742, 24, 1072, 478]  # 61% of the face inside, 2.3x its area
    out = drop_contained(_dets([face, loose], [1.0, 0.67]))
    assert len(out) == 1 and out.boxes[0].tolist() == face


def test_neighbouring_faces_of_similar_size_both_stay() -> None:
    """Two people side by side in a crowd, boxes of similar size overlapping by ~45% of the smaller one:
    two faces (IoU NMS at 0.4 keeps both, and containment must not merge them)."""
    a, b = [391, 83, 457, 188], [355, 47, 428, 161]
    assert len(merge([_dets([a, b], [0.99, 0.91])], iou=0.4)) == 2
    # the same overlap with a much larger outer box, but only 45% inside: still two
    assert len(drop_contained(_dets([[0, 0, 100, 100], [55, 0, 135, 80]], [0.9, 0.8]))) == 2


def test_a_box_between_two_faces_goes_and_the_faces_stay() -> None:
    """Hamilton clip, frame 250 at native size: two people side by side (0.94, 0.99) and a box made of half of
    each (0.81, above the quality gate's 0.8), covered 29% and 49% by them: the box goes. A middle face that
    outscores its neighbours, or that each neighbour covers by under a fifth, stays."""
    left, right, between = [322, 31, 396, 143], [393, 85, 459, 187], [365, 63, 436, 182]
    out = drop_straddling(_dets([left, right, between], [0.94, 0.99, 0.81]))
    assert sorted(out.boxes.tolist()) == sorted([left, right])
    assert len(drop_straddling(_dets([left, right, between], [0.94, 0.80, 0.95]))) == 3
    row = [[0, 0, 100, 100], [90, 0, 190, 100], [180, 0, 280, 100]]  # 10% overlaps: three faces in a row
    assert len(drop_straddling(_dets(row, [0.9, 0.8, 0.9]))) == 3


@pytest.mark.shared
def test_windows_and_downscaled_frame_find_the_faces_the_native_pass_finds(
    shared_dir: Path, analyzer: FaceAnalyzer
) -> None:
    image = read_image(shared_dir / "data/identity/_multi_face_scenes/facenet_pytorch__multiface.jpg")
    detector = analyzer.detector
    native = detect_regions(detector, image, [whole_frame(image.shape[0], image.shape[1], None)], iou=0.4)
    assert len(native) >= 2
    windows = windows_around(native.boxes, image.shape[0], image.shape[1], context=2.5, size=128)
    found = detect_regions(detector, image, windows, iou=0.4)
    ious = iou_matrix(native.boxes, found.boxes)
    assert len(found) == len(native) and (ious.max(axis=1) > 0.7).all()
    # landmarks are in frame pixels: each lies near its native counterpart
    pair = ious.argmax(axis=1)
    spread = np.abs(found.landmarks[pair] - native.landmarks).max(axis=(1, 2))
    assert (spread < 0.15 * native.sizes).all()


def test_overlap_regions_one_native_tile_around_each_overlapping_pair() -> None:
    """Pairs overlapping by >= 5% of the smaller box get a tile-sized native region centred on the pair (shifted
    inside the frame at an edge); a third face inside that region adds none; touching boxes get none; a pair
    larger than a tile is seen whole, downscaled to the tile's size."""
    from streamproc.vision.regions import overlap_regions

    boxes = np.array(
        [
            [1000, 500, 1120, 650],  # a nearer face ...
            [1060, 490, 1150, 620],  # ... and one half behind it
            [1100, 520, 1180, 600],  # a third overlapping the second, inside the first pair's region
            [100, 100, 200, 200],  # two boxes that only touch
            [200, 100, 300, 200],
            [1850, 950, 1920, 1080],  # a pair at the frame's corner
            [1800, 960, 1880, 1060],
        ],
        np.float64,
    )
    regions = overlap_regions(boxes, 1080, 1920, 640, 352)
    assert [(r.x1 - r.x0, r.y1 - r.y0, r.out_w, r.out_h) for r in regions] == [(640, 352, 640, 352)] * 2
    centre, corner = regions
    assert ((centre.x0 + centre.x1) / 2, (centre.y0 + centre.y1) / 2) == (1075, 570)
    assert (corner.x1, corner.y1) == (1920, 1080)
    big = overlap_regions(np.array([[100, 100, 500, 500], [400, 150, 800, 550]], np.float64), 1080, 1920, 640, 352)
    assert len(big) == 1 and (big[0].x1 - big[0].x0, big[0].y1 - big[0].y0) == (732, 482)
    assert (big[0].out_w, big[0].out_h) == (535, 352) and big[0].scale < 1  # the whole pair, at most a tile's cost
    assert overlap_regions(boxes[:2] / 4, 300, 640, 640, 352) == []  # a frame smaller than a tile: none


@pytest.mark.shared
def test_a_face_cut_by_an_inner_edge_is_dropped_and_a_whole_one_kept(shared_dir: Path, analyzer: FaceAnalyzer) -> None:
    """Real faces (six, 103-120 px) seen through native bands of the frame whose inner edge crosses each face
    between its forehead and its chin. RetinaFace still returns a box for the part it sees, and that box can end
    a few pixels short of the edge (in the 1080p street clip: 2-13 px, IoU 0.28-0.6 with the face), which a
    test of the box alone lets through. A box whose landmarks come that close to the edge is cut. An edge a
    twentieth of the face beyond its box cuts nothing: the face is found whole."""
    image = read_image(shared_dir / "data/identity/_multi_face_scenes/facenet_pytorch__multiface.jpg")
    height, width = image.shape[:2]
    detector = analyzer.detector
    faces = detect_regions(detector, image, [whole_frame(height, width, None)], iou=0.4)
    assert len(faces) >= 5

    def seen(y0: float, y1: float, face: np.ndarray) -> float:
        """Best IoU with ``face`` of what a native band of rows [y0, y1) of the frame finds."""
        top, bottom = max(round(y0), 0), min(round(y1), height)
        found = detect_regions(detector, image, [Region(0, top, width, bottom, width, bottom - top)], iou=0.4)
        return float(iou_matrix(face[None], found.boxes).max(initial=0.0))

    for face in faces.boxes:
        top, bottom = float(face[1]), float(face[3])
        for share in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            cut = top + share * (bottom - top)
            assert seen(cut - 300, cut, face) < 0.1 and seen(cut, cut + 300, face) < 0.1, (face, share)
        margin = 0.05 * (bottom - top)
        assert seen(top - margin, bottom + margin + 300, face) > 0.85, face  # an inner edge just above the face
        assert seen(top - margin - 300, bottom + margin, face) > 0.85, face  # ... and just below it
