"""Watchlist governance: expired entries are purged (and audited); a new enrolment that collides with
another subject is refused.

A collision (a new template within the calibrated threshold of *another* subject) means the same person
enrolled twice under two ids, or a look-alike that would make every match of either ambiguous: both are
for a person to resolve before anyone is searched for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from streamproc.errors import EnrolmentError
from streamproc.records.audit import AuditLog
from streamproc.search.fairscore import FairScoreMap
from streamproc.search.fairsearch import FairSearcher, scored_search
from streamproc.search.templates import NewTemplate, Subject
from streamproc.search.watchlist import Watchlist

EXPIRY_ACTOR = "streamproc-expiry"


def purge_expired(watchlist: Watchlist, audit: AuditLog, now: datetime | None = None) -> list[Subject]:
    """Remove every subject whose ``expires_at`` has passed; one audit record each. ``watchlist`` writable."""
    now = now or datetime.now(UTC)
    purged = watchlist.expired(now)
    for subject in purged:
        reason = f"expired at {subject.expires_at.isoformat() if subject.expires_at else '?'}"
        watchlist.remove(subject.subject_id, removed_by=EXPIRY_ACTOR, reason=reason, now=now)
        audit.append(
            EXPIRY_ACTOR,
            "expire",
            subject_id=subject.subject_id,
            reason=reason,
            details={"added_by": subject.added_by, "legal_basis": subject.legal_basis},
        )
    return purged


def check_collisions(
    watchlist: Watchlist,
    subject_id: str,
    templates: Sequence[NewTemplate],
    threshold: float,
    fair_map: FairScoreMap | None = None,
) -> None:
    """Refuse templates within ``threshold`` (distance) of a different active subject; with the calibration's
    ``fair_map``, of its calibrated distance (the scale the threshold then applies to, as in the pipeline)."""
    if not templates or len(watchlist) == 0:
        return
    queries = np.stack([t.vector for t in templates])
    searcher = None if fair_map is None else FairSearcher(fair_map)
    for i, candidates in enumerate(scored_search(watchlist, queries, 3, searcher, within=threshold)):
        for cand in candidates:
            if cand.subject_id != subject_id and cand.distance <= threshold:
                raise EnrolmentError(
                    f"enrolment refused, nothing written: photo {i + 1} is within the match threshold of "
                    f"subject {cand.subject_id} ({cand.display_name}; {'fair-map ' if cand.fair else ''}distance "
                    f"{cand.distance:.4f} <= "
                    f"{threshold:.4f}): the same person under two ids, or a look-alike whose matches would be "
                    "ambiguous; resolve it (remove or merge) before enrolling"
                )
