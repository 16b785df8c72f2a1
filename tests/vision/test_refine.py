"""Native landmarks for embedded chips: a face's view cut from its frame, and its chip aligned from the face
found again there (real RetinaFace and SFace on a real photo)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamproc.types import ImageBGR
from streamproc.vision.align import align
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.refine import VIEW_PX, cut_view, refined_chips


@pytest.fixture(scope="module")
def frame() -> ImageBGR:
    """The astronaut portrait (scikit-image, 512x512) in the middle of a 1280x720 grey frame."""
    from skimage import data

    image = np.full((720, 1280, 3), 96, np.uint8)
    image[104:616, 384:896] = data.astronaut()[:, :, ::-1]
    return image


def _face(analyzer: FaceAnalyzer, image: ImageBGR) -> tuple[np.ndarray, np.ndarray]:
    dets = analyzer.detector.detect([image])[0]
    best = int(np.argmax(dets.scores))
    return dets.boxes[best], dets.landmarks[best]


@pytest.mark.parametrize("zoom", [1, 2])
def test_a_view_is_a_copy_that_aligns_like_the_frame(analyzer: FaceAnalyzer, frame: ImageBGR, zoom: int) -> None:
    """The 95x118 px face gets a native view (2x its size); at twice the size its view is downscaled to
    VIEW_PX, and its box and landmarks scale with it."""
    image: ImageBGR = np.asarray(cv2.resize(frame, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC), np.uint8)
    box, landmarks = _face(analyzer, image)
    view = cut_view(image, box, landmarks)
    side = 2.0 * float(max(box[2] - box[0], box[3] - box[1]))
    scale = min(VIEW_PX / side, 1.0)
    assert view.image.shape[0] == view.image.shape[1]
    assert abs(view.image.shape[0] - min(side, VIEW_PX)) <= 1
    np.testing.assert_allclose(view.box[2] - view.box[0], (box[2] - box[0]) * scale, rtol=0.01)
    from_view = align(view.image, view.landmarks, analyzer.template).astype(np.int16)
    from_frame = align(image, landmarks, analyzer.template).astype(np.int16)
    assert np.abs(from_view - from_frame).mean() < (1.0 if zoom == 1 else 4.0)  # the same face
    before = view.image.copy()
    image[:] = 0  # the decoder reuses frame buffers: a view must not change with its frame
    assert np.array_equal(view.image, before)


def test_coarse_landmarks_are_found_again_at_native_resolution(analyzer: FaceAnalyzer, frame: ImageBGR) -> None:
    """A face seen at half its size (as in a downscaled window) has landmarks several pixels off; the chip
    aligned from the face found again in its native view embeds much closer to the native detection's chip
    (0.95 -> 0.99 when written; the view's detection is not exactly the whole frame's)."""
    _, native = _face(analyzer, frame)
    small: ImageBGR = np.asarray(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA), np.uint8)
    coarse_box, coarse = _face(analyzer, small)
    coarse_box, coarse = coarse_box * 2, coarse * 2
    assert np.abs(coarse - native).max() > 3.0  # the half-size detection really is coarser
    view = cut_view(frame, coarse_box, coarse)
    (refined,) = refined_chips(analyzer.detector, [view], analyzer.template)
    e_native, e_coarse, e_refined = analyzer.embedder.embed(
        np.stack([align(frame, native, analyzer.template), align(frame, coarse, analyzer.template), refined])
    )
    assert float(e_refined @ e_native) > float(e_coarse @ e_native) + 0.02
    assert float(e_refined @ e_native) > 0.98


def test_a_face_not_found_again_keeps_its_first_landmarks(analyzer: FaceAnalyzer) -> None:
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    box = np.array([300, 150, 360, 220], np.float32)
    landmarks = np.array([[315, 175], [345, 175], [330, 190], [318, 205], [342, 205]], np.float32)
    view = cut_view(image, box, landmarks)
    (chip,) = refined_chips(analyzer.detector, [view], analyzer.template)
    assert np.array_equal(chip, align(view.image, view.landmarks, analyzer.template))
    assert refined_chips(analyzer.detector, [], analyzer.template) == []
