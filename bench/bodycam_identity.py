"""Do the schedule's chosen chips still match the person? An identity check of best shots on the LFW street.

``shot_ok`` compares quality scores, a proxy: on blurred faces the score is noisy from frame to frame, and a
mode that looks at a face on fewer frames has fewer draws of that noise. What the product needs is that the
chip it embeds still matches the person. On the street (bench/bodycam_clips.py) each walker's LFW person is
known, so for each reference track the schedule also found, both modes' best chosen chips are embedded with the
default embedder and compared with the person's *other* photos (up to 3, the central face of each; a person
with one photo is skipped, since the walker is drawn from that photo and would match it trivially). A pair
counts as a match at the pipeline's shipped threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bodycam_clips import TrackLog
from numpy.typing import NDArray

from streamproc.eval.embedding import embed_images
from streamproc.vision.faces import FaceAnalyzer

Boxes = dict[int, NDArray[np.float32]]


@dataclass(frozen=True)
class IdentityCheck:
    tracks: int  # found walker tracks with a chosen chip in both modes and another photo of the person
    reference_matches: int  # the reference's best chosen chip within the threshold of the person's photos
    schedule_matches: int  # the schedule's
    both: int
    reference_cosine: float  # mean best cosine similarity to the person's other photos
    schedule_cosine: float


def _other_photos(analyzer: FaceAnalyzer, photo: Path, limit: int = 3) -> NDArray[np.float32]:
    """(k, D) unit embeddings of the central face of up to ``limit`` other photos of ``photo``'s person."""
    others = sorted(p for p in photo.parent.glob("*.jpg") if p != photo)[:limit]
    found = [v for v in embed_images(others, analyzer) if v is not None]
    return np.stack(found) if found else np.zeros((0, analyzer.embedder.identity.dim), np.float32)


def identity_check(
    pairs: Sequence[tuple[TrackLog, TrackLog]],
    walker_photo: Callable[[Boxes], Path | None],
    analyzer: FaceAnalyzer,
    max_distance: float,
) -> IdentityCheck:
    """``pairs``: (reference track, schedule track) from :func:`bodycam_clips.compare` on the street;
    ``walker_photo``: :func:`bodycam_clips.street_walker_photo`; ``max_distance``: the pipeline's cosine
    distance threshold."""
    cos_ref: list[float] = []
    cos_fast: list[float] = []
    for ref, fast in pairs:
        photo = walker_photo(ref.boxes)
        if photo is None or ref.best_chip is None or fast.best_chip is None:
            continue
        others = _other_photos(analyzer, photo)
        if not len(others):
            continue
        chips = analyzer.embedder.embed(np.stack([ref.best_chip, fast.best_chip]))  # (2, D) unit
        best = (chips @ others.T).max(axis=1)
        cos_ref.append(float(best[0]))
        cos_fast.append(float(best[1]))
    r, f = np.asarray(cos_ref), np.asarray(cos_fast)
    bar = 1.0 - max_distance
    return IdentityCheck(
        tracks=len(r),
        reference_matches=int((r >= bar).sum()),
        schedule_matches=int((f >= bar).sum()),
        both=int(((r >= bar) & (f >= bar)).sum()),
        reference_cosine=float(r.mean()) if len(r) else float("nan"),
        schedule_cosine=float(f.mean()) if len(f) else float("nan"),
    )
