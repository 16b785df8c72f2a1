"""Human review of match events: who decided what, the two-person rule, and getting decisions onto the feed.

A match event is only a candidate. A reviewer compares the probe with the enrolled subject and decides
``confirm`` or ``reject``. The rules (:func:`next_review`):

- the event must be in the journal (retention or erasure may have removed it);
- one reviewer decides an event at most once;
- a single reject makes it ``rejected`` (a doubt is enough to stop);
- ``required`` distinct confirms make it ``confirmed`` (2 by default: the two-person rule);
- once ``confirmed`` or ``rejected`` no further decision is taken, until a supervisor reopens it with a note
  (:func:`reopen`): the reopen is stored and published like a decision (``decision: reopen``, status
  ``pending``) and starts a new round, in which every reviewer may decide once again;
- reviewer id and note are required: a decision nobody can account for is worth nothing.

Decisions are stored in the event journal (:meth:`~streamproc.feed.journal.EventJournal.append_review`), with a seq
from the same counter as match events, and each is appended to the audit log (actor = reviewer, action
``review``) inside the same journal transaction: the audit log has them in the journal's order, and a refused
or failed decision writes neither.

Publishing: ``streamproc review decide`` runs in its own process and cannot use the pipeline's PUB socket. It
only stores; the running pipeline's :meth:`~streamproc.feed.event_feed.EventFeed.publish_pending_reviews` publishes what
is stored above the journal's ``reviews_published`` mark (persisted, so decisions made while no pipeline ran
are published once the next one starts). With no pipeline, decisions wait in the journal; they are already
replayable (``events tail --since SEQ --replay``) either way.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from streamproc.errors import StreamprocError
from streamproc.feed.journal import EventJournal
from streamproc.feed.schema import MAX_NOTE, REVIEWER_PATTERN, MatchEvent, ReviewDecision, ReviewEvent, ReviewStatus
from streamproc.govern.accounts import Reviewer
from streamproc.records.audit import AuditLog

AUDIT_ACTION: Final = "review"
VIEW_ACTION: Final = "review_view"
"""Audit action for every look at a candidate's evidence (console page, ``review show --save-face``)."""
DECISIONS: Final = ("confirm", "reject")
_REVIEWER_RE: Final = re.compile(REVIEWER_PATTERN)
_EVENT_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
_PREFIX_RE: Final = re.compile(r"[0-9a-f]{1,32}")
MIN_PREFIX: Final = 4
_ALL: Final = 2**62


class ReviewError(StreamprocError):
    """A review request is malformed (no reviewer, blank note, bad event id, no journal): a usage error."""


class ReviewRefusedError(ReviewError):
    """A well-formed decision the rules refuse (unknown event, second decision by one reviewer, final status)."""


@dataclass(frozen=True)
class ReviewState:
    """A journaled match event and the decisions on it so far."""

    event: MatchEvent
    reviews: tuple[ReviewEvent, ...]

    @property
    def status(self) -> ReviewStatus:
        """The last decision's status; ``pending`` before any."""
        return self.reviews[-1].status if self.reviews else "pending"

    @property
    def confirmations(self) -> tuple[str, ...]:
        return self.reviews[-1].confirmations if self.reviews else ()


def check_request(event_id: str, decision: str, reviewer: str, note: str) -> None:
    """Refuse malformed input before anything is opened for writing (one-line :class:`ReviewError`)."""
    if not _EVENT_ID_RE.fullmatch(event_id):
        raise ReviewError(f"event id must be 32 lowercase hex characters, not {event_id[:40]!r}")
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be confirm or reject, not {decision!r}")
    if not reviewer.strip():
        raise ReviewError("a reviewer id is required")
    if not _REVIEWER_RE.fullmatch(reviewer):
        raise ReviewError(
            f"reviewer id {reviewer[:70]!r} must be 1-64 of A-Z a-z 0-9 _ . @ + - (starting with a letter or digit)"
        )
    if not note.strip():
        raise ReviewError("a note is required: say why you confirm or reject")
    if len(note) > MAX_NOTE:
        raise ReviewError(f"note is {len(note)} characters; at most {MAX_NOTE}")


def next_review(
    event: MatchEvent | None,
    event_id: str,
    prior: Sequence[ReviewEvent],
    *,
    decision: ReviewDecision,
    reviewer: str,
    note: str,
    required: int,
    seq: int,
    decided_at: float,
    review_id: str,
) -> ReviewEvent:
    """The decision as it will be stored, or :class:`ReviewRefusedError`: the rules, with no I/O.

    ``prior`` are the earlier decisions on the event in seq order; ``required`` is the number of distinct
    confirmations in force now (``review.confirmations``), counted against all confirms so far.
    """
    if event is None:
        raise ReviewRefusedError(
            f"no match event {event_id} in the journal (never stored, or removed by retention/erasure)"
        )
    last_status = prior[-1].status if prior else "pending"
    if decision == "reopen":
        if last_status == "pending":
            raise ReviewRefusedError(f"event {event_id} is pending; only a confirmed or rejected one can be reopened")
        return ReviewEvent(
            review_id=review_id,
            seq=seq,
            event_id=event_id,
            stream_id=event.stream_id,
            subject_id=event.subject_id,
            decision="reopen",
            reviewer=reviewer,
            note=note,
            decided_at=decided_at,
            status="pending",
            confirmations=(),
            required_confirmations=required,
        )
    if last_status != "pending":
        last = prior[-1]
        raise ReviewRefusedError(f"event {event_id} is already {last.status} (seq {last.seq}); no further decisions")
    prior = current_round(prior)
    for earlier in prior:
        if earlier.reviewer == reviewer:
            raise ReviewRefusedError(
                f"{reviewer} already decided event {event_id} ({earlier.decision}, seq {earlier.seq}); "
                "a second decision needs another reviewer"
            )
    confirmations = tuple(r.reviewer for r in prior if r.decision == "confirm")
    status: ReviewStatus
    if decision == "reject":
        status = "rejected"
    else:
        confirmations = (*confirmations, reviewer)
        status = "confirmed" if len(confirmations) >= required else "pending"
    return ReviewEvent(
        review_id=review_id,
        seq=seq,
        event_id=event_id,
        stream_id=event.stream_id,
        subject_id=event.subject_id,
        decision=decision,
        reviewer=reviewer,
        note=note,
        decided_at=decided_at,
        status=status,
        confirmations=confirmations,
        required_confirmations=required,
    )


def current_round(reviews: Sequence[ReviewEvent]) -> list[ReviewEvent]:
    """The decisions since the last reopen (all of them when there was none)."""
    start = max((i + 1 for i, r in enumerate(reviews) if r.decision == "reopen"), default=0)
    return list(reviews[start:])


def decide(
    journal: EventJournal,
    audit: AuditLog | Callable[[], AuditLog],
    event_id: str,
    decision: ReviewDecision,
    reviewer: str,
    note: str,
    *,
    required: int,
    now: Callable[[], float] = time.time,
) -> ReviewEvent:
    """Apply the rules, store the decision in ``journal`` and append it to ``audit``; all or nothing.

    Raises :class:`ReviewError` for malformed input and :class:`ReviewRefusedError` when the rules refuse; in both
    cases neither the journal nor the audit log changes. ``audit`` may be a function that opens (or creates) the
    log: it is then called only once the decision is accepted, so a refusal does not even create a log.
    """
    check_request(event_id, decision, reviewer, note)
    return _store(journal, audit, event_id, decision, reviewer, note, required=required, now=now)


def reopen(
    journal: EventJournal,
    audit: AuditLog | Callable[[], AuditLog],
    event_id: str,
    supervisor: Reviewer,
    note: str,
    *,
    required: int,
    now: Callable[[], float] = time.time,
) -> ReviewEvent:
    """Send a confirmed or rejected candidate back to review: supervisors only, with a note; stored, audited and
    published like a decision. Raises :class:`ReviewRefusedError` for a non-supervisor or a pending event."""
    check_request(event_id, "confirm", supervisor.id, note)
    if not supervisor.is_supervisor:
        raise ReviewRefusedError(f"{supervisor.id} is a {supervisor.role}; only a supervisor may reopen a candidate")
    return _store(journal, audit, event_id, "reopen", supervisor.id, note, required=required, now=now)


def _store(
    journal: EventJournal,
    audit: AuditLog | Callable[[], AuditLog],
    event_id: str,
    decision: ReviewDecision,
    reviewer: str,
    note: str,
    *,
    required: int,
    now: Callable[[], float],
) -> ReviewEvent:
    if required < 1:
        raise ReviewError(f"required confirmations must be at least 1, not {required}")

    def build(event: MatchEvent | None, prior: Sequence[ReviewEvent], seq: int) -> ReviewEvent:
        return next_review(
            event,
            event_id,
            prior,
            decision=decision,
            reviewer=reviewer,
            note=note,
            required=required,
            seq=seq,
            decided_at=now(),
            review_id=secrets.token_hex(16),
        )

    def record(review: ReviewEvent) -> None:
        log = audit if isinstance(audit, AuditLog) else audit()
        log.append(
            reviewer,
            AUDIT_ACTION,
            subject_id=review.subject_id,
            details={
                "event_id": review.event_id,
                "decision": review.decision,
                "status": review.status,
                "note": review.note,
                "review_id": review.review_id,
                "journal_seq": review.seq,
            },
        )

    return journal.append_review(event_id, build, record)


def state(journal: EventJournal, event_id: str) -> ReviewState:
    """The event and its decisions; :class:`ReviewError` when the journal does not hold it."""
    if not _EVENT_ID_RE.fullmatch(event_id):
        raise ReviewError(f"event id must be 32 lowercase hex characters, not {event_id[:40]!r}")
    event = journal.event(event_id)
    if event is None:
        raise ReviewError(f"no match event {event_id} in {journal.path}")
    return ReviewState(event, tuple(journal.reviews_of(event_id)))


def states(journal: EventJournal, status: ReviewStatus | None = None) -> list[ReviewState]:
    """Every journaled match event with its decisions, in seq order; only those in ``status`` if given."""
    reviews: dict[str, list[ReviewEvent]] = {}
    for review in journal.reviews_after(0, limit=_ALL):
        reviews.setdefault(review.event_id, []).append(review)
    found = [ReviewState(e, tuple(reviews.get(e.event_id, ()))) for e in journal.since(0)]
    return [s for s in found if status is None or s.status == status]


def resolve_event_id(journal: EventJournal, given: str) -> str:
    """The full id of the one journaled event whose id starts with ``given`` (at least :data:`MIN_PREFIX` hex
    characters, e.g. the 12 the demo prints); :class:`ReviewError` naming the matches when several do."""
    given = given.strip().lower()
    if not _PREFIX_RE.fullmatch(given) or len(given) < MIN_PREFIX:
        raise ReviewError(f"event id must be {MIN_PREFIX} to 32 hex characters (a unique prefix), not {given[:40]!r}")
    if len(given) == 32:
        return given
    matches = [e.event_id for e in journal.since(0) if e.event_id.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ReviewRefusedError(f"no match event whose id starts with {given} in the journal")
    shown = ", ".join(matches[:10]) + (f" and {len(matches) - 10} more" if len(matches) > 10 else "")
    raise ReviewError(f"event id prefix {given} is ambiguous: {len(matches)} events match ({shown}); give more of it")


def audit_view(audit: AuditLog, reviewer: str, event: MatchEvent, what: str) -> None:
    """Record that ``reviewer`` looked at ``event``'s evidence (``what``: e.g. ``console``, ``saved_face``)."""
    audit.append(
        reviewer,
        VIEW_ACTION,
        subject_id=event.subject_id,
        details={"event_id": event.event_id, "stream_id": event.stream_id, "view": what},
    )


def open_journal(path: Path | None, config_name: str) -> EventJournal:
    """The run's event journal for review commands: it must be configured and exist (the pipeline creates it)."""
    if path is None:
        raise ReviewError(f"{config_name}: events.journal.path is not set; review decisions are kept in the journal")
    if not path.is_file():
        raise ReviewError(f"no event journal at {path} (the pipeline creates it when it starts)")
    return EventJournal(path)


__all__ = [
    "AUDIT_ACTION",
    "MIN_PREFIX",
    "VIEW_ACTION",
    "ReviewError",
    "ReviewRefusedError",
    "ReviewState",
    "audit_view",
    "check_request",
    "current_round",
    "decide",
    "next_review",
    "open_journal",
    "reopen",
    "resolve_event_id",
    "state",
    "states",
]
