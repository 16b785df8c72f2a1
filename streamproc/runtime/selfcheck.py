"""The embedder's start-up self-check: does it tell the demo face from another face at all?

A model fed the wrong colour order or scaling (``embedder.color/mean/std``) still returns vectors, and every
distance then looks plausible; only the flags are garbage. Two views of one face (scikit-image's
``astronaut``: the portrait and a rotated, shrunk copy) must be closer to each other than either is to another
person (``camera``, the cameraman), and for cosine models the other person must not lie within
:data:`MIN_COSINE_IMPOSTOR_DISTANCE` (input scaled wrongly saturates the network and every face lands on nearly
one direction: SFace fed ``std: 1`` puts the cameraman 0.08 from the astronaut, fed correctly 0.79); else the
command stops at start with one line.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.errors import ModelError
from streamproc.protocols import FaceDetector
from streamproc.types import ImageBGR
from streamproc.vision.align import align
from streamproc.vision.embed import OnnxEmbedder

MIN_COSINE_IMPOSTOR_DISTANCE = 0.3
"""Cosine distance (1 - cos) below which two different people are implausibly close for a working model."""


def _skimage_bgr(name: str) -> ImageBGR:
    """A scikit-image sample picture as uint8 BGR (grey pictures repeated over three channels)."""
    from skimage import data

    rgb = getattr(data, name)()
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _second_view(image: ImageBGR) -> ImageBGR:
    """The same face rotated 12 degrees and shrunk to 60 %: a different chip, not a mirror (flip averaging
    would make a mirror identical)."""
    h, w = image.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 3), 12.0, 0.6)
    view = cv2.warpAffine(image, rot, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(view, dtype=np.uint8)


def _distances(vectors: NDArray[np.float32], metric: str) -> NDArray[np.float64]:
    v = vectors.astype(np.float64)
    if metric == "cosine":
        return np.asarray(1.0 - v @ v.T)
    return np.asarray(np.linalg.norm(v[:, None, :] - v[None, :, :], axis=-1))


def check_embedder(detector: FaceDetector, embedder: OnnxEmbedder) -> None:
    """Raise :class:`ModelError` (one line) unless the two demo-face chips are the closest pair of three."""
    astronaut = _skimage_bgr("astronaut")
    images = [astronaut, _second_view(astronaut), _skimage_bgr("camera")]
    chips = []
    for image, dets in zip(images, detector.detect(images), strict=True):
        if len(dets.scores) == 0:
            raise ModelError("embedder self-check: the detector finds no face in the built-in sample pictures")
        best = int(np.argmax(dets.scores))
        chips.append(align(image, dets.landmarks[best], embedder.chip_template))
    d = _distances(embedder.embed(np.stack(chips)), embedder.identity.metric)
    same, other = float(d[0, 1]), float(min(d[0, 2], d[1, 2]))
    collapsed = embedder.identity.metric == "cosine" and other < MIN_COSINE_IMPOSTOR_DISTANCE
    if not same < other or collapsed:
        raise ModelError(
            f"embedder self-check failed: two views of one face are {same:.3f} apart but another person is "
            f"{other:.3f} away ({embedder.identity.kind}): check the model and embedder.color/mean/std"
        )
