"""Quality gate: pose, blur and size measures name the right reasons."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamproc.config_recognition import QualityConfig
from streamproc.vision.align import ARCFACE_112, align
from streamproc.vision.quality import QualityGate, pose, sharpness


def _face_image() -> tuple[np.ndarray, np.ndarray]:
    """A textured 'face' with landmarks at the ArcFace template scaled x2."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (240, 240, 3), dtype=np.uint8)
    return image, ARCFACE_112.array() * 2 + 8


@pytest.mark.parametrize(
    ("nose_dx", "expected_sign"),
    [(0.0, 0), (15.0, 1), (-15.0, -1)],
)
def test_yaw_follows_the_nose(nose_dx: float, expected_sign: int) -> None:
    pts = ARCFACE_112.array().copy()
    pts[2, 0] += nose_dx
    yaw, roll = pose(pts)
    assert abs(roll) < 0.5
    assert np.sign(round(yaw, 2)) == expected_sign


def test_roll_is_the_eye_line_angle() -> None:
    pts = ARCFACE_112.array().copy()
    pts[1, 1] = pts[0, 1] + (pts[1, 0] - pts[0, 0])  # right eye 45 degrees lower
    _, roll = pose(pts)
    assert roll == pytest.approx(45.0, abs=0.5)


def test_blur_lowers_sharpness_and_is_named() -> None:
    image, pts = _face_image()
    gate = QualityGate(QualityConfig(min_face_px=10))
    box = np.array([0, 0, 240, 240], np.float32)
    sharp_chip = align(image, pts, ARCFACE_112)
    blurred_chip = align(np.asarray(cv2.GaussianBlur(image, (0, 0), 6), dtype=np.uint8), pts, ARCFACE_112)
    assert sharpness(blurred_chip) < sharpness(sharp_chip) / 10
    good = gate.assess(box, pts, 0.99, sharp_chip)
    bad = gate.assess(box, pts, 0.99, blurred_chip)
    assert good.passed, good.reasons
    assert bad.reasons == ("blurry",)
    assert bad.score < good.score


def test_small_profile_low_score_face_names_every_reason() -> None:
    image, pts = _face_image()
    chip = align(image, pts, ARCFACE_112)
    profile = pts.copy()
    profile[2, 0] += 60
    q = QualityGate(QualityConfig()).assess(np.array([0, 0, 20, 20], np.float32), profile, 0.5, chip)
    assert set(q.reasons) == {"too_small", "off_pose", "low_detector_score"}
    assert not q.passed
