"""Still-image face analysis: detect, align to the embedder's template, score quality, embed.

Used by enrolment, manual search and evaluation; the video pipeline composes the same stages itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamproc.protocols import FaceDetector
from streamproc.types import Detections, Face, ImageBGR
from streamproc.vision.align import ChipTemplate, align
from streamproc.vision.embed import OnnxEmbedder
from streamproc.vision.quality import QualityGate
from streamproc.vision.regions import drop_straddling


@dataclass(frozen=True)
class FaceAnalyzer:
    """Detector + alignment + quality gate + embedder, built together by :mod:`streamproc.runtime.build`."""

    detector: FaceDetector
    embedder: OnnxEmbedder
    quality: QualityGate

    @property
    def template(self) -> ChipTemplate:
        return self.embedder.chip_template

    def faces(self, image: ImageBGR, detections: Detections | None = None) -> list[Face]:
        """Every face in ``image``, best detector score first, each aligned and quality-scored. A box lying
        between two better faces is none (:func:`~streamproc.vision.regions.drop_straddling`: 63 of 8,725
        ../shared stills have one, and it is never the central face the evaluation picks)."""
        dets = drop_straddling(detections if detections is not None else self.detector.detect([image])[0])
        faces = []
        for i in np.argsort(-dets.scores, kind="stable"):
            chip = align(image, dets.landmarks[i], self.template)
            quality = self.quality.assess(dets.boxes[i], dets.landmarks[i], float(dets.scores[i]), chip)
            box = tuple(float(v) for v in dets.boxes[i])
            faces.append(
                Face(
                    box=(box[0], box[1], box[2], box[3]),
                    landmarks=dets.landmarks[i],
                    detector_score=float(dets.scores[i]),
                    quality=quality,
                    chip=chip,
                )
            )
        return faces

    def embed(self, faces: Sequence[Face]) -> NDArray[np.float32]:
        """(len(faces), D) float32 descriptors."""
        if not faces:
            return np.zeros((0, self.embedder.identity.dim), np.float32)
        return self.embedder.embed(np.stack([f.chip for f in faces]))


def central_face(faces: Sequence[Face], image_shape: tuple[int, ...]) -> Face | None:
    """The face whose box centre is nearest the image centre (the LFW convention for the subject)."""
    if not faces:
        return None
    cy, cx = image_shape[0] / 2, image_shape[1] / 2

    def distance(face: Face) -> float:
        x1, y1, x2, y2 = face.box
        return float(np.hypot((x1 + x2) / 2 - cx, (y1 + y2) / 2 - cy))

    return min(faces, key=distance)
