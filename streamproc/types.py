"""Small immutable values that flow between stages.

Conventions used everywhere:
- frames and still images are ``uint8`` arrays of shape ``(H, W, 3)`` in **BGR** order (OpenCV's and
  RetinaFace's native order, and what PyAV gives with ``format="bgr24"``);
- face chips are ``uint8`` arrays of shape ``(S, S, 3)`` in **RGB** order, aligned to an embedder's template;
- boxes are ``(x1, y1, x2, y2)`` float32 pixels; landmarks are five ``(x, y)`` points: left eye, right eye,
  nose, left mouth corner, right mouth corner (left/right as seen in the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

Metric = Literal["l2", "cosine"]
"""How embeddings compare: ``l2`` (raw Euclidean distance, dlib) or ``cosine`` (1 - cos of unit vectors)."""

ImageBGR = NDArray[np.uint8]
ChipRGB = NDArray[np.uint8]

SourceState = Literal["connecting", "streaming", "reconnecting", "ended", "failed", "stopped"]
SOURCE_STATES: tuple[SourceState, ...] = ("connecting", "streaming", "reconnecting", "ended", "failed", "stopped")
"""Every :data:`SourceState`, in lifecycle order (one gauge per state)."""


@dataclass(frozen=True)
class Detections:
    """Faces found in one image: one row per face.

    boxes: (N, 4) float32 x1, y1, x2, y2; scores: (N,) float32 in [0, 1];
    landmarks: (N, 5, 2) float32 pixel coordinates.
    """

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    landmarks: NDArray[np.float32]

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.boxes.shape != (n, 4) or self.landmarks.shape != (n, 5, 2) or self.scores.ndim != 1:
            raise ValueError(
                f"inconsistent detection shapes: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"landmarks {self.landmarks.shape}"
            )

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> Detections:
        """Rows picked by an integer index or boolean mask."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    @property
    def sizes(self) -> NDArray[np.float32]:
        """(N,) shorter box side in pixels."""
        wh = self.boxes[:, 2:4] - self.boxes[:, 0:2]
        return np.asarray(wh.min(axis=1), dtype=np.float32)


@dataclass(frozen=True)
class Quality:
    """How fit a face is for embedding.

    score in [0, 1] (higher is better; used to rank best shots); ``reasons`` names every gate the face
    failed (empty means it passed). Components are kept so a reviewer can see why.
    """

    score: float
    face_px: float
    sharpness: float
    yaw: float
    roll_deg: float
    detector_score: float
    reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class Face:
    """One detected face in an image, aligned and quality-scored, ready to embed.

    chip: (S, S, 3) uint8 RGB aligned to the embedder's template.
    """

    box: tuple[float, float, float, float]
    landmarks: NDArray[np.float32]
    detector_score: float
    quality: Quality
    chip: ChipRGB = field(repr=False)


@dataclass(frozen=True)
class EmbedderIdentity:
    """What made a template: templates from different models are not comparable."""

    kind: str
    model_sha256: str
    dim: int
    metric: Metric

    def __post_init__(self) -> None:
        if not self.kind or self.dim < 1 or self.metric not in get_args(Metric):
            raise ValueError(f"invalid embedder identity: {self!r}")


@dataclass(frozen=True)
class Frame:
    """One decoded (and sampled) video frame.

    image: (H, W, 3) uint8 BGR. ``index`` counts frames handed out by this stream's source (after
    sampling), from 0. ``pts_s``: presentation time in seconds from the start of the stream; for a folder
    of clips it runs on across files, so media time is monotonic per stream. ``captured_at``: wall-clock
    UNIX time the frame was decoded; end-to-end latency is measured from it. ``source``: the file path or
    URL the frame came from.
    """

    stream_id: str
    index: int
    pts_s: float
    captured_at: float
    image: ImageBGR = field(repr=False)
    source: str = ""
