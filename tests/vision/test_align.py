"""Alignment maths: the similarity fit recovers known transforms and puts landmarks on the template."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.vision.align import ARCFACE_112, DLIB_150, ChipTemplate, align, similarity_transform


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts @ matrix[:, :2].T + matrix[:, 2])


@settings(max_examples=60, deadline=None)
@given(
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.2, 5.0),
    tx=st.floats(-500, 500),
    ty=st.floats(-500, 500),
)
def test_fit_recovers_an_exact_similarity(angle: float, scale: float, tx: float, ty: float) -> None:
    src = DLIB_150.array()
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    truth = np.array([[c, -s, tx], [s, c, ty]])
    dst = _apply(truth, src.astype(np.float64)).astype(np.float32)
    fitted = similarity_transform(src, dst)
    np.testing.assert_allclose(fitted, truth, atol=1e-3 * max(1.0, abs(tx), abs(ty)))


def test_fit_matches_opencv_least_squares_on_noisy_points() -> None:
    rng = np.random.default_rng(0)
    src = ARCFACE_112.array() * 2.3 + 40 + rng.normal(0, 2.0, (5, 2)).astype(np.float32)
    ours = similarity_transform(src, ARCFACE_112.array())
    theirs, _ = cv2.estimateAffinePartial2D(src, ARCFACE_112.array(), method=cv2.LMEDS)
    residual_ours = np.abs(_apply(ours, src) - ARCFACE_112.array()).mean()
    residual_cv = np.abs(_apply(theirs, src) - ARCFACE_112.array()).mean()
    assert residual_ours <= residual_cv + 1e-6


@pytest.mark.parametrize("template", [DLIB_150, ARCFACE_112])
def test_align_puts_the_landmarks_on_the_template(template: ChipTemplate) -> None:
    # Draw five dots where a rotated, scaled face would have its landmarks, then align.
    angle, scale = math.radians(20), 1.7
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    place = np.array([[c, -s, 90.0], [s, c, 60.0]])
    points = _apply(place, template.array().astype(np.float64)).astype(np.float32)
    for k, (x, y) in enumerate(template.points):
        # One white dot per image: its intensity-weighted centroid in the chip must sit on the template.
        image = np.zeros((480, 480, 3), np.uint8)
        cx, cy = points[k]
        cv2.circle(image, (round(float(cx)), round(float(cy))), 4, (0, 0, 255), -1, lineType=cv2.LINE_AA)
        chip = align(image, points, template)
        assert chip.shape == (template.size, template.size, 3)
        red = chip[:, :, 0].astype(np.float64)  # RGB chip: BGR red is channel 0
        assert red.sum() > 0, f"dot {k} missing from the chip"
        ys, xs = np.mgrid[0 : chip.shape[0], 0 : chip.shape[1]]
        # round() placed the dot up to 0.5 px off in the source image: allow for that after scaling.
        tol = 0.5 / 1.7 * 1.5 + 0.3
        assert abs((xs * red).sum() / red.sum() - x) < tol
        assert abs((ys * red).sum() / red.sum() - y) < tol
        assert chip[:, :, 2].max() == 0, "colour order must be RGB"
