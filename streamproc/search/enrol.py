"""Turning enrolment photos into templates, refusing anything doubtful before the watchlist is touched.

Every image is checked first (readable, exactly one face or an explicit choice, passes the quality gate);
only if all pass are templates returned, so a failed enrolment writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamproc.errors import EnrolmentError, ImageError
from streamproc.fsutil import sha256_file
from streamproc.search.templates import NewTemplate
from streamproc.types import Face
from streamproc.vision.faces import FaceAnalyzer
from streamproc.vision.imageio import read_image
from streamproc.vision.quality import eye_span


@dataclass(frozen=True)
class FaceChoice:
    """Which face to take from a photo with several: ``index`` (0 = highest detector score) or largest."""

    index: int | None = None
    largest: bool = False


def _pick(faces: list[Face], choice: FaceChoice) -> tuple[Face | None, str | None]:
    if not faces:
        return None, "no face found"
    if choice.largest:
        return max(faces, key=lambda f: f.quality.face_px), None
    if choice.index is not None:
        if choice.index >= len(faces):
            return None, f"--face {choice.index} asked for, but only {len(faces)} face(s) found"
        return faces[choice.index], None
    if len(faces) > 1:
        return None, f"{len(faces)} faces found; say which with --face N (0 = most confident) or --largest"
    return faces[0], None


def templates_from_images(
    paths: Sequence[Path], analyzer: FaceAnalyzer, choice: FaceChoice = FaceChoice()
) -> list[NewTemplate]:
    """One template per image, or EnrolmentError naming every refused image and why."""
    chosen: list[tuple[Path, Face]] = []
    refusals: list[str] = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as err:
            refusals.append(str(err))
            continue
        face, problem = _pick(analyzer.faces(image), choice)
        if face is None:
            refusals.append(f"{path}: {problem}")
        elif not face.quality.passed:
            q = face.quality
            refusals.append(
                f"{path}: face below the quality gate ({', '.join(q.reasons)}; size {q.face_px:.0f}px, "
                f"sharpness {q.sharpness:.0f}, yaw {q.yaw:.2f}, eye span {eye_span(face.landmarks):.2f}, "
                f"detector {q.detector_score:.2f})"
            )
        else:
            chosen.append((path, face))
    if refusals:
        raise EnrolmentError("enrolment refused, nothing written: " + "; ".join(refusals))
    vectors = analyzer.embed([face for _, face in chosen])
    return [
        NewTemplate(vector=vec, source_sha256=sha256_file(path), quality=face.quality.score, chip=face.chip)
        for (path, face), vec in zip(chosen, vectors, strict=True)
    ]
