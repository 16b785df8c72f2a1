"""Watchlist values: what enrolment supplies (subject metadata, templates), what is stored, and its checks.

Vectors are ``(dim,)`` float32; for the cosine metric they must be L2-normalised (checked at enrolment) and
are stored as float32 little-endian blobs. Timestamps are aware UTC datetimes, stored as ISO-8601 text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import numpy as np
from numpy.typing import NDArray

from streamproc.errors import EnrolmentError
from streamproc.types import EmbedderIdentity

_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_UNIT_NORM_TOL: Final = 1e-2


@dataclass(frozen=True)
class NewSubject:
    """Metadata supplied at enrolment (``added_at`` is set by the watchlist)."""

    subject_id: str
    display_name: str
    reason: str
    legal_basis: str
    added_by: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class NewTemplate:
    """One ``(dim,)`` float32 embedding, the sha256 of the image it came from and, when known, the aligned
    ``(S, S, 3)`` uint8 RGB chip it was embedded from (stored for reviewers, :mod:`streamproc.search.chips`)."""

    vector: NDArray[np.float32]
    source_sha256: str
    quality: float
    chip: NDArray[np.uint8] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Subject:
    """An enrolled subject; ``n_templates`` counts live templates."""

    subject_id: str
    display_name: str
    reason: str
    legal_basis: str
    added_by: str
    added_at: datetime
    expires_at: datetime | None
    n_templates: int
    removed_at: datetime | None = None


# ---------------------------------------------------------------------- enrolment checks
def check_subject(subject: NewSubject, now: datetime) -> None:
    """Refuse empty accountability fields, a padded id, or an expiry not after ``now``."""
    for name in ("subject_id", "display_name", "reason", "legal_basis", "added_by"):
        if not str(getattr(subject, name)).strip():
            raise EnrolmentError(f"enrolment refused: {name} is empty (it is recorded for accountability)")
    if subject.subject_id != subject.subject_id.strip():
        raise EnrolmentError(f"enrolment refused: subject_id {subject.subject_id!r} has surrounding whitespace")
    if subject.expires_at is not None and utc_now(subject.expires_at) <= now:
        raise EnrolmentError(f"enrolment refused: expires_at {subject.expires_at.isoformat()} is not in the future")


def check_templates(templates: Sequence[NewTemplate], identity: EmbedderIdentity) -> NDArray[np.float32]:
    """Validate all templates up front; return ``(N, dim)`` float32 (unit rows for cosine)."""
    if not templates:
        raise EnrolmentError("enrolment refused: no templates")
    rows = []
    for i, t in enumerate(templates):
        vec = np.asarray(t.vector)
        if vec.shape != (identity.dim,):
            raise EnrolmentError(
                f"enrolment refused: template {i} has shape {vec.shape}, expected "
                f"({identity.dim},) from {identity.kind}"
            )
        vec = vec.astype(np.float32)
        if not np.all(np.isfinite(vec)):
            raise EnrolmentError(f"enrolment refused: template {i} contains NaN or infinity")
        if identity.metric == "cosine":
            norm = float(np.linalg.norm(vec))
            if abs(norm - 1.0) > _UNIT_NORM_TOL:
                raise EnrolmentError(
                    f"enrolment refused: template {i} has L2 norm {norm:.4f}; cosine "
                    "watchlists need L2-normalised embeddings"
                )
            vec = vec / norm
        if not _SHA256_RE.fullmatch(t.source_sha256):
            raise EnrolmentError(f"enrolment refused: template {i} source_sha256 is not 64 lowercase hex digits")
        if not np.isfinite(t.quality):
            raise EnrolmentError(f"enrolment refused: template {i} quality is not finite")
        rows.append(vec)
    return np.stack(rows).astype(np.float32)


# ---------------------------------------------------------------------- stored forms
def to_blob(vec: NDArray[np.float32]) -> bytes:
    """float32 little-endian bytes (portable across hosts)."""
    return np.asarray(vec, dtype="<f4").tobytes()


def from_blob(blob: object, dim: int) -> NDArray[np.float32] | None:
    """The ``(dim,)`` float32 vector of a stored blob; None if missing (erased) or malformed."""
    if not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def is_live(expires_at: datetime | None, now: datetime) -> bool:
    """Whether a subject with this expiry is still searchable at ``now``."""
    return expires_at is None or expires_at > now


def utc_now(value: datetime | None) -> datetime:
    """``value`` (must be timezone-aware) in UTC, or the current UTC time."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware (UTC) datetime")
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """The stored text of a timestamp: ISO-8601 UTC with microseconds."""
    return utc_now(value).isoformat(timespec="microseconds")


def iso_opt(value: datetime | None) -> str | None:
    """:func:`iso`, passing None through."""
    return None if value is None else iso(value)


def parse_time(text: str) -> datetime:
    """A stored timestamp as an aware UTC datetime (naive text is read as UTC)."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_time_opt(text: object) -> datetime | None:
    """:func:`parse_time`, passing NULL (None) through."""
    return None if text is None else parse_time(str(text))
