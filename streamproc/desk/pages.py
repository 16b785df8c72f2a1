"""The console's pages: the queue (with a polled fragment), a candidate side by side, its images, decisions.

A decision is taken by the signed-in account (:func:`~streamproc.desk.app.signed_in`), never a form field, and
goes through :func:`streamproc.govern.review.decide`: journal + audit in one transaction, published on
``review.<stream>`` by the running pipeline, exactly as ``review decide`` does.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from streamproc.desk.app import Desk, csrf_ok, desk_of, login_redirect, signed_in
from streamproc.desk.evidence import day, enrolment_chips, explain, jpeg, subject_of, utc
from streamproc.feed.schema import MAX_NOTE, ReviewDecision
from streamproc.govern.accounts import Reviewer
from streamproc.govern.review import (
    DECISIONS,
    ReviewError,
    ReviewRefusedError,
    ReviewState,
    audit_view,
    current_round,
    decide,
    reopen,
    states,
)

STATUSES: Final = ("pending", "confirmed", "rejected")
_EVENT_ID: Final = re.compile(r"[0-9a-f]{32}")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
POLL_S: Final = 5


@dataclass(frozen=True)
class QueueView:
    """The queue as filtered: rows newest first, counts per status (under the stream and date filters)."""

    rows: list[ReviewState]
    counts: dict[str, int]
    streams: list[str]
    stream: str
    status: str
    date: str


def _queue(desk: Desk, stream: str, status: str, date: str) -> QueueView:
    found = states(desk.journal)
    streams = sorted({s.event.stream_id for s in found})
    scoped = [
        s
        for s in found
        if (not stream or s.event.stream_id == stream) and (not date or day(s.event.captured_at) == date)
    ]
    counts = Counter(s.status for s in scoped)
    rows = [s for s in reversed(scoped) if status in ("all", s.status)]
    return QueueView(rows, {k: counts.get(k, 0) for k in STATUSES}, streams, stream, status, date)


def _filters(request: Request) -> tuple[str, str, str]:
    q = request.query_params
    stream = q.get("stream", "")
    status = q.get("status", "pending")
    date = q.get("date", "")
    return (
        stream if re.fullmatch(r"[A-Za-z0-9_.-]{0,64}", stream) else "",
        status if status in (*STATUSES, "all") else "pending",
        date if _DATE.fullmatch(date) else "",
    )


async def queue_page(request: Request) -> Response:
    who = signed_in(request)
    if who is None:
        return login_redirect(request)
    desk = desk_of(request)
    view = await run_in_threadpool(_queue, desk, *_filters(request))
    return desk.render("queue.html", **_base(who), view=view, utc=utc, poll_s=POLL_S)


async def queue_rows(request: Request) -> Response:
    """The queue's table body and counts, for the page's short polling (new candidates without a reload)."""
    who = signed_in(request)
    if who is None:
        return Response("sign in first", status_code=401)
    desk = desk_of(request)
    view = await run_in_threadpool(_queue, desk, *_filters(request))
    return desk.render("_rows.html", view=view, utc=utc)


def _base(who: tuple[Reviewer, str]) -> dict[str, Any]:
    return {"user": who[0], "csrf": who[1]}


def _state(desk: Desk, event_id: str) -> ReviewState | None:
    if not _EVENT_ID.fullmatch(event_id):
        return None
    event = desk.journal.event(event_id)
    return None if event is None else ReviewState(event, tuple(desk.journal.reviews_of(event_id)))


def _neighbours(desk: Desk, event_id: str) -> tuple[str | None, str | None]:
    """(newer, older) pending candidates around ``event_id`` in the queue's order: previous and next."""
    pending = [s.event.event_id for s in reversed(states(desk.journal, "pending"))]
    if event_id not in pending:
        return (pending[0] if pending else None), None
    i = pending.index(event_id)
    return (pending[i - 1] if i > 0 else None), (pending[i + 1] if i + 1 < len(pending) else None)


async def candidate_page(request: Request) -> Response:
    who = signed_in(request)
    if who is None:
        return login_redirect(request)
    return await _candidate(request, who, "", 200)


async def _candidate(request: Request, who: tuple[Reviewer, str], error: str, status: int) -> Response:
    desk = desk_of(request)
    account = who[0]
    event_id = request.path_params["event_id"]
    s = await run_in_threadpool(_state, desk, event_id)
    if s is None:
        return desk.render("missing.html", 404, **_base(who))
    # Looking at a face is itself accountable: the view is in the audit log before the page is sent.
    await run_in_threadpool(audit_view, desk.audit(account.id), account.id, s.event, "console")
    request.state.session.viewed.add(s.event.event_id)
    subject = await run_in_threadpool(subject_of, desk.cfg.watchlist.path, s.event.subject_id)
    chips = await run_in_threadpool(enrolment_chips, desk.cfg.watchlist.path, s.event.subject_id)
    newer, older = await run_in_threadpool(_neighbours, desk, s.event.event_id)
    round_reviews = current_round(s.reviews)
    mine = next((r for r in round_reviews if r.reviewer == account.id), None)
    names = {a.id: a.display_name for a in desk.accounts.all()}
    return desk.render(
        "candidate.html",
        status,
        **_base(who),
        s=s,
        e=s.event,
        explained=explain(s.event),
        subject=subject,
        labels=[label for label, _ in chips],
        mine=mine,
        can_decide=s.status == "pending" and mine is None,
        can_reopen=s.status != "pending" and account.is_supervisor,
        required=s.reviews[-1].required_confirmations if s.reviews else desk.cfg.review.confirmations,
        names=names,
        newer=newer,
        older=older,
        error=error,
        max_note=MAX_NOTE,
        utc=utc,
    )


async def _viewed(request: Request) -> tuple[Desk, ReviewState] | Response:
    """The candidate of an image request, or the refusal to send instead: images go only to a session that
    opened (and so audited) the candidate's page."""
    if signed_in(request) is None:
        return Response("sign in first", status_code=401)
    desk = desk_of(request)
    event_id = request.path_params["event_id"]
    if event_id not in request.state.session.viewed:
        return Response("not found", status_code=404)
    s = await run_in_threadpool(_state, desk, event_id)
    if s is None:
        return Response("not found", status_code=404)
    return desk, s


async def probe_jpeg(request: Request) -> Response:
    """The probe's aligned face."""
    viewed = await _viewed(request)
    if isinstance(viewed, Response):
        return viewed
    face = viewed[1].event.face_jpeg()
    if face is None:
        return Response("not found", status_code=404)
    return Response(face, media_type="image/jpeg")


async def enrolled_jpeg(request: Request) -> Response:
    """One enrolment chip of the candidate's subject, by template label; 404 for any other label."""
    viewed = await _viewed(request)
    if isinstance(viewed, Response):
        return viewed
    desk, s = viewed
    chips = dict(await run_in_threadpool(enrolment_chips, desk.cfg.watchlist.path, s.event.subject_id))
    chip = chips.get(request.path_params["label"])
    if chip is None:
        return Response("not found", status_code=404)
    return Response(jpeg(chip), media_type="image/jpeg")


async def decide_post(request: Request) -> Response:
    who = signed_in(request)
    if who is None:
        return login_redirect(request)
    desk = desk_of(request)
    account, csrf = who
    form = await request.form()
    if not csrf_ok(form.get("csrf"), csrf):
        return Response("CSRF token missing or wrong: reload the page", status_code=403)
    event_id = request.path_params["event_id"]
    action, note = str(form.get("decision", "")), str(form.get("note", ""))
    if not _EVENT_ID.fullmatch(event_id) or desk.journal.event(event_id) is None:
        return desk.render("missing.html", 404, **_base(who))
    audit, required = desk.audit(account.id), desk.cfg.review.confirmations
    try:
        if action == "reopen":
            if not account.is_supervisor:
                return Response("only a supervisor may reopen a decided candidate", status_code=403)
            await run_in_threadpool(lambda: reopen(desk.journal, audit, event_id, account, note, required=required))
        elif action in DECISIONS:
            decision: ReviewDecision = "confirm" if action == "confirm" else "reject"
            await run_in_threadpool(
                lambda: decide(desk.journal, audit, event_id, decision, account.id, note, required=required)
            )
        else:
            return await _candidate(request, who, "Choose confirm or reject.", 400)
    except ReviewRefusedError as refused:
        return await _candidate(request, who, f"Refused: {refused}", 409)
    except ReviewError as bad:
        return await _candidate(request, who, str(bad), 400)
    return RedirectResponse(f"/c/{event_id}", status_code=303)


def routes() -> list[Route]:
    return [
        Route("/", queue_page, methods=["GET"]),
        Route("/queue/rows", queue_rows, methods=["GET"]),
        Route("/c/{event_id}", candidate_page, methods=["GET"]),
        Route("/c/{event_id}", decide_post, methods=["POST"]),
        Route("/c/{event_id}/probe.jpg", probe_jpeg, methods=["GET"]),
        Route("/c/{event_id}/enrolled/{label:int}.jpg", enrolled_jpeg, methods=["GET"]),
    ]


__all__ = ["routes"]
