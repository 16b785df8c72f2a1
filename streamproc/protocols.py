"""The small interfaces stages are written against, so implementations can be swapped by config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from streamproc.types import Detections, EmbedderIdentity, ImageBGR


class FaceDetector(Protocol):
    """Finds faces with five landmarks."""

    @property
    def cache_key(self) -> str:
        """Identifies the model and settings, so cached results are never reused across them."""
        ...

    @property
    def kind(self) -> str:
        """The detector type as configured (``detector.type``): calibration files are bound to it."""
        ...

    def detect(self, images: Sequence[ImageBGR]) -> list[Detections]:
        """One :class:`Detections` per input image (BGR uint8, any size), in input order."""
        ...


class Embedder(Protocol):
    """Turns aligned face chips into descriptors."""

    @property
    def identity(self) -> EmbedderIdentity: ...

    @property
    def chip_size(self) -> int:
        """Side of the square RGB chip this embedder takes."""
        ...

    @property
    def template(self) -> NDArray[np.float32]:
        """(5, 2) float32 landmark positions in the chip that alignment maps faces onto."""
        ...

    def embed(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N, S, S, 3) uint8 RGB chips -> (N, D) float32 descriptors (unit length for cosine metric)."""
        ...
