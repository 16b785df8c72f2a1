"""Reading still images into the BGR uint8 arrays every stage expects."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streamproc.errors import ImageError
from streamproc.types import ImageBGR


def read_image(path: Path) -> ImageBGR:
    """(H, W, 3) uint8 BGR, EXIF orientation applied, grey images expanded to three channels."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageError(f"cannot read image {path}: {err.strerror or err}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"cannot decode image {path}: not a supported image file or it is truncated")
    return np.asarray(image, dtype=np.uint8)
