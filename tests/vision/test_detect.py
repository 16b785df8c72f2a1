"""RetinaFace decoding maths and detection on real photos."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamproc.config_recognition import RetinaFaceConfig
from streamproc.vision.detect import RetinaFaceDetector, decode, make_priors, nms
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.imageio import read_image


@pytest.mark.parametrize(("h", "w"), [(250, 250), (360, 640), (720, 1280), (97, 131)])
def test_prior_count_matches_the_network_grid(h: int, w: int) -> None:
    expected = sum(math.ceil(h / s) * math.ceil(w / s) * 2 for s in (8, 16, 32))
    priors = make_priors(h, w)
    assert priors.shape == (expected, 4)
    # first anchor: centre of the first stride-8 cell, size 16
    np.testing.assert_allclose(priors[0], [4, 4, 16, 16])
    np.testing.assert_allclose(priors[1], [4, 4, 32, 32])


def test_zero_regression_decodes_to_the_anchor_itself() -> None:
    priors = np.array([[50, 60, 32, 32]], np.float32)
    boxes, points = decode(priors, np.zeros((1, 4), np.float32), np.zeros((1, 10), np.float32))
    np.testing.assert_allclose(boxes, [[34, 44, 66, 76]])
    np.testing.assert_allclose(points, np.tile([[50, 60]], (1, 5, 1)))


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert sorted(nms(boxes, scores, 0.4).tolist()) == [1, 2]


@pytest.mark.shared
def test_finds_every_face_in_group_photos(shared_dir: Path, analyzer: FaceAnalyzer) -> None:
    scenes = shared_dir / "data/identity/_multi_face_scenes"
    expected = {
        "face_recognition__two_people.jpg": 2,
        "face_recognition__obama_and_biden.jpg": 3,
        "facenet_pytorch__multiface.jpg": 6,
        "deepface__couple.jpg": 2,
    }
    for name, count in expected.items():
        image = read_image(scenes / name)
        dets = analyzer.detector.detect([image])[0]
        assert len(dets) == count, name
        # every landmark lies inside (or within 10% of) its box
        for box, pts in zip(dets.boxes, dets.landmarks, strict=True):
            margin = 0.1 * (box[2] - box[0])
            assert (pts[:, 0] > box[0] - margin).all() and (pts[:, 0] < box[2] + margin).all()
            assert (pts[:, 1] > box[1] - margin).all() and (pts[:, 1] < box[3] + margin).all()


@pytest.mark.shared
def test_a_box_between_two_people_is_not_among_the_faces(shared_dir: Path, analyzer: FaceAnalyzer) -> None:
    """LFW photos (looked at by eye) where RetinaFace also boxes the gap between two people side by side, half
    of each, at 0.80-0.94: the detector reports three boxes, the still-image analysis only the two faces."""
    for name in ("Pierre_Png/Pierre_Png_0001", "Tony_Blair/Tony_Blair_0144", "Todd_Haynes/Todd_Haynes_0001"):
        image = read_image(shared_dir / f"data/identity/lfw/{name}.jpg")
        boxes = analyzer.detector.detect([image])[0].boxes
        faces = analyzer.faces(image)
        assert len(faces) == len(boxes) - 1, name
        gone = [b for b in boxes.tolist() if not any(np.allclose(b, f.box) for f in faces)]
        centre_x = (gone[0][0] + gone[0][2]) / 2
        assert sum(f.box[0] < centre_x < f.box[2] for f in faces) >= 1, name  # it lay across a kept face


@pytest.mark.shared
def test_batch_and_scaled_inputs_agree_with_single_native_runs(shared_dir: Path, analyzer: FaceAnalyzer) -> None:
    lfw = sorted((shared_dir / "data/identity/lfw").glob("*/*.jpg"))[:6]
    images = [read_image(p) for p in lfw]
    detector = analyzer.detector
    batched = detector.detect(images)
    for image, together in zip(images, batched, strict=True):
        alone = detector.detect([image])[0]
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)
    # An image 4x larger than max_side is downscaled for the network and boxes come back in its pixels.
    assert isinstance(detector, RetinaFaceDetector)
    big = np.asarray(cv2.resize(images[0], None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    small_box = detector.detect([images[0]])[0].boxes[0]
    big_box = detector.detect([big])[0].boxes[0]
    np.testing.assert_allclose(big_box / 6, small_box, atol=4.0)


def test_blank_frame_has_no_faces(analyzer: FaceAnalyzer) -> None:
    assert len(analyzer.detector.detect([np.zeros((360, 640, 3), np.uint8)])[0]) == 0


def test_min_face_size_filters_small_faces(analyzer: FaceAnalyzer) -> None:
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    assert isinstance(analyzer.detector, RetinaFaceDetector)
    found = analyzer.detector.detect([image])[0]
    assert len(found) == 1
    size = float(found.sizes[0])
    strict = RetinaFaceDetector(analyzer.detector._session, RetinaFaceConfig(min_face_px=size + 1), "test")
    assert len(strict.detect([image])[0]) == 0
