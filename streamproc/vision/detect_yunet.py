"""YuNet (OpenCV Zoo 2023mar) face detector: padding to the network grid, per-stride decoding, NMS.

The converted network (:mod:`streamproc.models.yunet_convert`) takes float32 NCHW **BGR**, raw 0..255, batch
1, height and width multiples of 32 (images are zero-padded right and bottom, so coordinates need no shift).
For each stride s in 8/16/32 it returns, over the ``(H/s) x (W/s)`` cells in row-major order, class and
objectness probabilities (A, 1), box regressions (A, 4) and landmark regressions (A, 10). Cell ``(row, col)``
decodes to score ``sqrt(cls * obj)``, box centre ``((col + b0) s, (row + b1) s)``, size ``(e^b2 s, e^b3 s)``
and landmarks ``((kx + col) s, (ky + row) s)``, in the same order as RetinaFace's: the eye, then the mouth
corner, on the image's left first (the subject's right), the nose in the middle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.config_recognition import YuNetConfig
from streamproc.models.providers import BatchRunner
from streamproc.types import Detections, ImageBGR
from streamproc.vision.detect import detector_cache_key, fit_input, nms

if TYPE_CHECKING:
    import onnxruntime as ort

STRIDES = (8, 16, 32)
ALIGN = 32  # input sides must be multiples of the largest stride


def cell_grid(height: int, width: int) -> list[tuple[int, NDArray[np.float32]]]:
    """Per stride: (stride, (A, 2) float32 (col, row) of each cell in the network's output order) for a padded
    (height, width) input."""
    grids = []
    for stride in STRIDES:
        rows, cols = np.meshgrid(np.arange(height // stride), np.arange(width // stride), indexing="ij")
        grids.append((stride, np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)))
    return grids


def decode(
    cells: NDArray[np.float32], stride: int, bbox: NDArray[np.float32], kps: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(A, 2) cells, (A, 4) box and (A, 10) landmark regressions -> (A, 4) x1y1x2y2 boxes and (A, 5, 2)
    landmarks, in network-input pixels."""
    centre = (cells + bbox[:, :2]) * stride
    size = np.exp(bbox[:, 2:]) * stride
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    points = (kps.reshape(-1, 5, 2) + cells[:, None, :]) * stride
    return boxes.astype(np.float32), points.astype(np.float32)


class YuNetDetector:
    """Detects faces in batches of BGR images of any size, one network call per image (the batch is fixed at 1).

    The cell grids are cached per padded size on the instance (a stream's frames all share one size).
    """

    def __init__(self, session: ort.InferenceSession, config: YuNetConfig, model_sha256: str) -> None:
        self._config = config
        self._model_sha256 = model_sha256
        self._session = session
        self._runner = BatchRunner(session, session.get_inputs()[0].name)
        self._outputs = {o.name: i for i, o in enumerate(session.get_outputs())}
        self._grids: dict[tuple[int, int], list[tuple[int, NDArray[np.float32]]]] = {}

    @property
    def kind(self) -> str:
        return self._config.type

    @property
    def cache_key(self) -> str:
        """Identifies the model and every setting that changes the output (for result caches)."""
        return detector_cache_key(self._config, self._model_sha256)

    def detect(self, images: Sequence[ImageBGR]) -> list[Detections]:
        return [self._detect_one(image) for image in images]

    def _prepare(self, image: ImageBGR) -> tuple[NDArray[np.float32], float]:
        """(1, 3, H', W') float32 BGR 0..255, zero-padded right/bottom to multiples of 32, and the input scale."""
        image, scale = fit_input(image, self._config)
        height, width = image.shape[:2]
        padded_h, padded_w = -(-height // ALIGN) * ALIGN, -(-width // ALIGN) * ALIGN
        tensor = np.zeros((1, 3, padded_h, padded_w), np.float32)
        for channel, plane in enumerate(cv2.split(image)):
            tensor[0, channel, :height, :width] = plane
        return tensor, scale

    def _detect_one(self, image: ImageBGR) -> Detections:
        tensor, scale = self._prepare(image)
        size = (tensor.shape[2], tensor.shape[3])
        grids = self._grids.get(size)
        if grids is None:
            grids = self._grids[size] = cell_grid(*size)
        outputs = self._runner(tensor)
        head = {name: outputs[i][0] for name, i in self._outputs.items()}  # batch row 0 of each output
        threshold = self._config.score_threshold
        boxes, scores, points = [], [], []
        for stride, cells in grids:
            cls, obj = head[f"cls_{stride}"][:, 0], head[f"obj_{stride}"][:, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.flatnonzero(score >= threshold)
            if keep.size:
                b, p = decode(cells[keep], stride, head[f"bbox_{stride}"][keep], head[f"kps_{stride}"][keep])
                boxes.append(b)
                points.append(p)
                scores.append(score[keep].astype(np.float32))
        if not scores:
            return Detections.empty()
        all_boxes, all_scores, all_points = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
        kept = nms(all_boxes, all_scores, self._config.nms_iou)
        dets = Detections(
            (all_boxes[kept] / scale).astype(np.float32),
            all_scores[kept],
            (all_points[kept] / scale).astype(np.float32),
        )
        return dets.select(np.flatnonzero(dets.sizes >= self._config.min_face_px))
