"""Embedding a set of evaluation images: one descriptor per image (the central face) or None.

No quality gate is applied and nothing is rescued: an image where the detector finds no face has no
descriptor, and the protocols count that against the system (failure to detect).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamproc.eval.cache import EmbeddingCache
from streamproc.fsutil import sha256_file
from streamproc.types import Face
from streamproc.vision.faces import FaceAnalyzer, central_face
from streamproc.vision.imageio import read_image

ProgressFn = Callable[[int, int], None]


def setting_key(analyzer: FaceAnalyzer, detector_key: str) -> str:
    """Everything that changes an image's descriptor: embedder model and detector settings."""
    return json.dumps(
        {"embedder": analyzer.embedder.cache_key, "detector": detector_key, "pick": "central"}, sort_keys=True
    )


def embed_images(
    paths: Sequence[Path],
    analyzer: FaceAnalyzer,
    cache: EmbeddingCache | None = None,
    progress: ProgressFn | None = None,
    batch: int = 64,
) -> list[NDArray[np.float32] | None]:
    """Descriptor of the central face of each image (None where no face is found), in input order."""
    results: list[NDArray[np.float32] | None] = [None] * len(paths)
    pending: list[tuple[int, str, Face]] = []

    def flush() -> None:
        if not pending:
            return
        vectors = analyzer.embed([face for _, _, face in pending])
        for (i, sha, _), vec in zip(pending, vectors, strict=True):
            results[i] = vec
            if cache is not None:
                cache.put(sha, vec)
        pending.clear()
        if cache is not None:
            cache.commit()

    for i, path in enumerate(paths):
        sha = sha256_file(path)
        hit, vector = cache.get(sha) if cache is not None else (False, None)
        if hit:
            results[i] = vector
        else:
            image = read_image(path)
            face = central_face(analyzer.faces(image), image.shape)
            if face is None:
                if cache is not None:
                    cache.put(sha, None)
            else:
                pending.append((i, sha, face))
                if len(pending) >= batch:
                    flush()
        if progress is not None:
            progress(i + 1, len(paths))
    flush()
    return results
