"""``streamproc events``: watch the match-event feed from a terminal or a script.

Mounted by :mod:`streamproc.cli` as ``app.add_typer(events_app, name="events")``. User mistakes raise
:class:`~streamproc.errors.StreamprocError`, which ``cli.main`` prints as one line.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streamproc.config_checks import zmq_endpoint
from streamproc.errors import ConfigError
from streamproc.feed.codec import EventFormatError
from streamproc.feed.replay import ReplayUnreachableError, iter_since
from streamproc.feed.schema import REVIEW_TOPIC_PREFIX, TOPIC_PREFIX, FeedEvent, ReviewEvent
from streamproc.feed.security import ClientSecurity, client_security_from_options, secure_client
from streamproc.feed.subscribe import EventSubscriber

events_app = typer.Typer(
    help="Watch the match-event feed (ZeroMQ). Every event is a candidate for human review, never an identification.",
    no_args_is_help=True,
    add_completion=False,
)


@events_app.callback()
def _events() -> None:
    """Watch the match-event feed (ZeroMQ). Every event is a candidate for human review, never an identification."""
    # A callback keeps `tail` a subcommand even while it is the group's only command.


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary(event: FeedEvent) -> str:
    """One line a reviewer can scan: when, where, which track, which candidate, how close (or who decided)."""
    if isinstance(event, ReviewEvent):
        return review_summary(event)
    when = _utc(event.captured_at)
    calibration = " UNCALIBRATED" if event.uncalibrated else ""
    e2e = event.latency_ms.get("end_to_end")
    latency = f" e2e={e2e:.0f}ms" if e2e is not None else ""
    seq = "" if event.seq is None else f" seq={event.seq}"  # what --since takes to resume after this event
    return (
        f"{when} stream={event.stream_id} track={event.track_id} candidate={event.subject_id} "
        f"({event.subject_name}) {event.metric} distance={event.distance:.4f}/threshold={event.threshold:.4f}"
        f"{calibration} {event.k}-of-{event.n}{latency} review: {event.review} event={event.event_id}{seq}"
    )


def review_summary(review: ReviewEvent) -> str:
    """One line per decision: which event, who, what, and the status it leaves (the note is quoted, one line)."""
    seq = "" if review.seq is None else f" seq={review.seq}"
    note = review.note.replace("\n", " ")
    return (
        f"{_utc(review.decided_at)} stream={review.stream_id} REVIEW event={review.event_id} "
        f"candidate={review.subject_id} {review.decision} by {review.reviewer} -> {review.status} "
        f"({len(review.confirmations)}/{review.required_confirmations} confirmations) note={note!r}{seq}"
    )


def _sink(as_json: bool) -> Callable[[FeedEvent], None]:
    out = Console(soft_wrap=True, markup=False, highlight=False)

    def emit(event: FeedEvent) -> None:
        if as_json:
            typer.echo(event.model_dump_json())
        else:
            out.print(summary(event))

    return emit


class _GapFiller:
    """Prints the journaled gap after ``--since``, then live events each exactly once, in seq order.

    Live events are subscribed to before the gap is fetched and buffered while it is; any later jump in seq
    (slow joiner, high-water mark drop, a filtered-out stream) or a quiet second is filled from the replay
    endpoint again, so nothing journaled is skipped and nothing is printed twice. A replay endpoint that does
    not answer (the pipeline stopped or is restarting) is asked again every quiet second, from the last seq
    printed; the outage and the recovery are each reported once.
    """

    def __init__(
        self,
        sub: EventSubscriber,
        replay: str,
        since: int,
        prefixes: list[bytes],
        timeout_s: float,
        emit: Callable[[FeedEvent], None],
        report: Callable[[str], None],
        security: ClientSecurity | None = None,
    ) -> None:
        self.sub = sub
        self.security = security
        self.replay = replay
        self.position = since
        self.prefixes = prefixes
        self.timeout_s = timeout_s
        self.emit = emit
        self.report = report
        self.printed = 0
        self.pending: deque[FeedEvent] = deque()
        self.waiting = False

    def _show(self, event: FeedEvent, limit: int | None) -> None:
        if (limit is None or self.printed < limit) and any(event.topic.startswith(p) for p in self.prefixes):
            self.emit(event)
            self.printed += 1

    def _drain_live(self) -> None:
        while True:
            try:
                event = self.sub.recv_any(timeout_s=0.0)
            except EventFormatError as bad:
                self.report(f"skipped: {bad}")
                continue
            if event is None:
                return
            self.pending.append(event)

    def fill(self, limit: int | None) -> None:
        """Print every journaled event after the current position (the live feed is buffered meanwhile)."""
        security = self.security
        setup = None if security is None else (lambda sock: secure_client(sock, security))
        try:
            for batch in iter_since(self.replay, self.position, self.timeout_s, socket_setup=setup):
                self._answered()
                for event in batch:
                    self._show(event, limit)
                    self.position = max(self.position, event.seq or 0)
                self._drain_live()
                if limit is not None and self.printed >= limit:
                    return
        except ReplayUnreachableError as err:
            if not self.waiting:
                self.report(f"{err}; waiting for it, then resuming after seq {self.position}")
            self.waiting = True
            return
        self._answered()

    def _answered(self) -> None:
        if self.waiting:
            self.report(f"replay endpoint {self.replay} answers again; resuming after seq {self.position}")
        self.waiting = False

    def live(self, wait_s: float, limit: int | None) -> None:
        """Handle the next live event (buffered first), waiting up to ``wait_s`` for one."""
        if self.pending:
            event: FeedEvent | None = self.pending.popleft()
        else:
            try:
                event = self.sub.recv_any(timeout_s=wait_s)
            except EventFormatError as bad:
                self.report(f"skipped: {bad}")
                return
        if event is None:
            # Quiet: ask the journal, in case the last events were published before the subscription was in
            # place (slow joiner) or dropped; without this they would only show up after the next live one.
            self.fill(limit)
            return
        if event.seq is None:  # a publisher without a journal: nothing to order or de-duplicate by
            self._show(event, limit)
            return
        if event.seq <= self.position:
            return  # already printed from the replay
        if event.seq > self.position + 1:
            self.fill(limit)
            if event.seq <= self.position:
                return
        self._show(event, limit)
        self.position = event.seq


@events_app.command("tail")
def tail(
    endpoint: Annotated[str, typer.Argument(help="Publisher endpoint, e.g. tcp://127.0.0.1:5560.")],
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            "-t",
            help="Topic prefix to subscribe to (repeatable), e.g. match.cam2 or review.; default: match. and review.",
        ),
    ] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Exit 0 after this many events.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.0,
            help="Stop after this many seconds; exit 1 if --count events have not arrived by then.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as one line of JSON.")] = False,
    secret_key: Annotated[
        Path | None,
        typer.Option("--secret-key", help="CURVE: this subscriber's NAME.key_secret (with --server-key)."),
    ] = None,
    server_key: Annotated[
        Path | None, typer.Option("--server-key", help="CURVE: the publisher's public server.key (with --secret-key).")
    ] = None,
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=0,
            help="First print the journaled events after this seq (0: all kept) from --replay, then the live feed.",
        ),
    ] = None,
    replay: Annotated[
        str | None,
        typer.Option("--replay", help="Replay endpoint of the publisher's journal, e.g. tcp://127.0.0.1:5561."),
    ] = None,
    replay_timeout: Annotated[
        float, typer.Option("--replay-timeout", min=0.001, help="Seconds to wait for each replay reply.")
    ] = 10.0,
) -> None:
    """Print match events and reviewers' decisions as they arrive: one summary line each, or JSON with --json.

    Events published before the subscription reaches the publisher are not seen (ZeroMQ PUB/SUB), unless
    --since and --replay fetch them from the publisher's journal first."""
    if (since is None) != (replay is None):
        raise typer.BadParameter("--since and --replay go together", param_hint="--since/--replay")
    for name, address in (("ENDPOINT", endpoint), ("--replay", replay)):
        try:
            zmq_endpoint(address or "inproc://unset")
        except ValueError as bad:
            raise ConfigError(f"{name}: {bad}") from None
    security = client_security_from_options(secret_key, server_key)
    emit = _sink(as_json)
    err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
    deadline = None if timeout is None else time.monotonic() + timeout
    received = 0
    topics = topic or [TOPIC_PREFIX, REVIEW_TOPIC_PREFIX]
    with EventSubscriber(endpoint, topics, security=security) as sub:
        if since is not None and replay is not None:
            # Subscribed (above) before the gap is fetched, so nothing published meanwhile is missed.
            filler = _GapFiller(
                sub, replay, since, [t.encode("utf-8") for t in topics], replay_timeout, emit, err.print, security
            )
            filler.fill(count)
            while count is None or filler.printed < count:
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                filler.live(min(wait, 1.0), count)
            received = filler.printed
        else:
            while count is None or received < count:
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    event = sub.recv_any(timeout_s=min(wait, 1.0))
                except EventFormatError as bad:
                    err.print(f"skipped: {bad}")
                    continue
                if event is None:
                    continue
                received += 1
                emit(event)
    if count is not None and received < count:
        err.print(f"timed out after {timeout:g} s: {received} of {count} event(s) received from {endpoint}")
        raise typer.Exit(1)
