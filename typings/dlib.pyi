# Minimal local stub for the parts of dlib (dlib-bin) that the tests use as a reference.
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

__version__: str

class vector:  # noqa: N801 (dlib's name)
    """dlib's column vector of doubles (a face descriptor is 128 of them)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> float: ...
    def __iter__(self) -> Iterator[float]: ...

class face_recognition_model_v1:  # noqa: N801 (dlib's name)
    def __init__(self, filename: str) -> None: ...
    def compute_face_descriptor(self, img: NDArray[np.uint8], num_jitters: int = 0) -> vector:
        """``img``: an aligned RGB uint8 face chip of exactly (150, 150, 3)."""
