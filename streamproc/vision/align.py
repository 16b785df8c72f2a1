"""Five-point similarity alignment of faces onto an embedder's chip template.

A similarity transform (rotation, uniform scale, translation) is the least-squares fit of the five
detected landmarks to the template (Umeyama, 1991): deterministic, unlike a RANSAC fit, and it preserves the
face's proportions, which the embedder was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.types import ChipRGB, ImageBGR


@dataclass(frozen=True)
class ChipTemplate:
    """Where the five landmarks sit in a square chip of ``size`` pixels: (x, y) tuples."""

    size: int
    points: tuple[tuple[float, float], ...]

    def array(self) -> NDArray[np.float32]:
        return np.asarray(self.points, dtype=np.float32)


# dlib's 150-px chip, measured on dlib's own chips (see ../shared/notes/models.md).
DLIB_150 = ChipTemplate(
    size=150,
    points=((46.20, 44.68), (100.28, 43.24), (73.68, 77.40), (48.76, 96.24), (98.68, 95.32)),
)

# The standard ArcFace / InsightFace 112-px template.
ARCFACE_112 = ChipTemplate(
    size=112,
    points=(
        (38.2946, 51.6963),
        (73.5318, 51.5014),
        (56.0252, 71.7366),
        (41.5493, 92.3655),
        (70.7299, 92.2041),
    ),
)


def similarity_transform(src: NDArray[np.float32], dst: NDArray[np.float32]) -> NDArray[np.float64]:
    """(2, 3) matrix of the least-squares similarity mapping ``src`` (K, 2) points onto ``dst`` (K, 2)."""
    src64, dst64 = src.astype(np.float64), dst.astype(np.float64)
    src_mean, dst_mean = src64.mean(axis=0), dst64.mean(axis=0)
    src_c, dst_c = src64 - src_mean, dst64 - dst_mean
    cov = dst_c.T @ src_c / len(src64)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src64)
    scale = float((s * d).sum() / var_src) if var_src > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align(image: ImageBGR, landmarks: NDArray[np.float32], template: ChipTemplate) -> ChipRGB:
    """Warp the face with five ``landmarks`` (5, 2) in a BGR image to an (S, S, 3) uint8 **RGB** chip."""
    matrix = similarity_transform(landmarks, template.array())
    chip = cv2.warpAffine(
        image,
        matrix,
        (template.size, template.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return np.ascontiguousarray(chip[:, :, ::-1])
