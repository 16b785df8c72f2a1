"""Re-enrolment: a new watchlist for another embedder, made from the enrolment chips the old one stores.

A watchlist is bound to the model that made its templates, so switching models (dlib -> SFace) means enrolling
again. Where the aligned enrolment chips were kept (:mod:`streamproc.search.chips`), nobody has to find the
photos again: each chip is re-aligned from the old model's template onto the new one (the old template's points
are exactly where the chip's landmarks sit) and embedded by the new model. The old watchlist is only read; the
new one is written to another directory, so a failed run leaves nothing half-switched.

A dlib chip (150 px, 2.8 eye distances wide) is tighter than SFace's (112 px, 3.2 eye distances): the new chip
has a thin replicated border, and its descriptor is a little weaker than one made from the photo (LFW, 40 faces:
cosine 0.93 on average, at least 0.87, to the photo's own; the FMR 1e-3 threshold is 0.63 cosine distance).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.errors import EnrolmentError, WatchlistError
from streamproc.search.store import DB_FILE
from streamproc.search.templates import NewSubject, NewTemplate, Subject
from streamproc.search.watchlist import Watchlist
from streamproc.vision.align import ARCFACE_112, DLIB_150, ChipTemplate, similarity_transform
from streamproc.vision.embed import OnnxEmbedder

CHIP_TEMPLATES: dict[str, ChipTemplate] = {"dlib-resnet": DLIB_150, "sface": ARCFACE_112, "arcface": ARCFACE_112}
"""The chip template each embedder kind aligns to (a chip's landmarks sit on these points)."""


@dataclass(frozen=True)
class Reenrolled:
    """One subject carried over: how many of its templates had a chip."""

    subject: Subject
    templates: int


def realign(chip: NDArray[np.uint8], source: ChipTemplate, target: ChipTemplate) -> NDArray[np.uint8]:
    """An ``(S, S, 3)`` uint8 RGB chip aligned on ``source`` re-aligned onto ``target`` (edges replicated)."""
    if chip.shape[:2] != (source.size, source.size):
        raise EnrolmentError(f"an enrolment chip is {chip.shape[1]}x{chip.shape[0]}, not {source.size} px square")
    matrix = similarity_transform(source.array(), target.array())[:2]
    out = cv2.warpAffine(
        chip, matrix, (target.size, target.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(out, dtype=np.uint8)


def _template_rows(directory: Path) -> dict[int, tuple[str, float]]:
    """label -> (source image sha256, quality) of every live template, read from the database read-only."""
    conn = sqlite3.connect(f"file:{directory / DB_FILE}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT label, source_sha256, quality FROM templates WHERE deleted = 0").fetchall()
    finally:
        conn.close()
    return {int(label): (str(sha), float(q)) for label, sha, q in rows}


def reenrol(old_dir: Path, new_dir: Path, embedder: OnnxEmbedder, operator: str) -> list[Reenrolled]:
    """Every active subject of ``old_dir`` enrolled into a new watchlist at ``new_dir`` from its stored chips.

    Refused, writing nothing, when ``new_dir`` exists, the old watchlist already uses this model, or any
    active subject has a template without a chip (those need their photos: ``watchlist enroll``)."""
    if new_dir.exists():
        raise WatchlistError(f"{new_dir} exists: re-enrolment writes a new watchlist directory")
    with Watchlist.open(old_dir) as old:
        if old.embedder == embedder.identity:
            raise WatchlistError(f"watchlist {old_dir} already uses this {embedder.identity.kind} model")
        source = CHIP_TEMPLATES.get(old.embedder.kind)
        if source is None:
            raise WatchlistError(f"watchlist {old_dir}: chips of a {old.embedder.kind} embedder cannot be re-aligned")
        rows = _template_rows(old_dir)
        plan: list[tuple[Subject, list[tuple[int, NDArray[np.uint8]]]]] = []
        missing = []
        for subject in old.subjects():
            chips = old.enrolment_chips(subject.subject_id)
            if len(chips) < subject.n_templates:
                missing.append(subject.subject_id)
            plan.append((subject, chips))
    if missing:
        raise WatchlistError(
            f"no enrolment chips kept for {', '.join(missing)} (enrolled before chips were stored): enrol them "
            "from their photos with `watchlist enroll`; nothing written"
        )
    target = embedder.chip_template
    prepared = []
    for subject, chips in plan:
        new_chips = [realign(chip, source, target) for _, chip in chips]
        vectors = embedder.embed(np.stack(new_chips)) if new_chips else np.zeros((0, embedder.identity.dim))
        templates = [
            NewTemplate(
                vector=np.asarray(vec, np.float32),
                source_sha256=rows.get(label, (hashlib.sha256(chip.tobytes()).hexdigest(), 0.0))[0],
                quality=rows.get(label, ("", 0.0))[1],
                chip=chip,
            )
            for (label, _), chip, vec in zip(chips, new_chips, vectors, strict=True)
        ]
        prepared.append((subject, templates))
    done = []
    with Watchlist.create(new_dir, embedder.identity) as new:
        for subject, templates in prepared:
            enrolled = new.enroll(
                NewSubject(
                    subject_id=subject.subject_id,
                    display_name=subject.display_name,
                    reason=subject.reason,
                    legal_basis=subject.legal_basis,
                    added_by=operator,
                    expires_at=subject.expires_at,
                ),
                templates,
            )
            done.append(Reenrolled(enrolled, len(templates)))
    return done
