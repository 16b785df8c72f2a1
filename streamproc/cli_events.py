"""``streamproc events``: watch the match-event feed from a terminal or a script.

Mounted by :mod:`streamproc.cli` as ``app.add_typer(events_app, name="events")``. User mistakes raise
:class:`~streamproc.errors.StreamprocError`, which ``cli.main`` prints as one line.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from streamproc.events import TOPIC_PREFIX, EventFormatError, EventSubscriber, MatchEvent

events_app = typer.Typer(
    help="Watch the match-event feed (ZeroMQ). Every event is a candidate for human review, never an identification.",
    no_args_is_help=True,
    add_completion=False,
)


@events_app.callback()
def _events() -> None:
    """Watch the match-event feed (ZeroMQ). Every event is a candidate for human review, never an identification."""
    # A callback keeps `tail` a subcommand even while it is the group's only command.


def summary(event: MatchEvent) -> str:
    """One line a reviewer can scan: when, where, which track, which candidate, how close."""
    when = datetime.fromtimestamp(event.captured_at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    calibration = " UNCALIBRATED" if event.uncalibrated else ""
    e2e = event.latency_ms.get("end_to_end")
    latency = f" e2e={e2e:.0f}ms" if e2e is not None else ""
    return (
        f"{when} stream={event.stream_id} track={event.track_id} candidate={event.subject_id} "
        f"({event.subject_name}) {event.metric} distance={event.distance:.4f}/threshold={event.threshold:.4f}"
        f"{calibration} {event.k}-of-{event.n}{latency} review: {event.review}"
    )


@events_app.command("tail")
def tail(
    endpoint: Annotated[str, typer.Argument(help="Publisher endpoint, e.g. tcp://127.0.0.1:5560.")],
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Topic prefix to subscribe to (repeatable), e.g. match.cam2."),
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
) -> None:
    """Print match events as they arrive: one summary line each, or JSON with --json.

    Events published before the subscription reaches the publisher are not seen (ZeroMQ PUB/SUB)."""
    out = Console(soft_wrap=True, markup=False, highlight=False)
    err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
    deadline = None if timeout is None else time.monotonic() + timeout
    received = 0
    with EventSubscriber(endpoint, topic or [TOPIC_PREFIX]) as sub:
        while count is None or received < count:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                event = sub.recv(timeout_s=min(wait, 1.0))
            except EventFormatError as bad:
                err.print(f"skipped: {bad}")
                continue
            if event is None:
                continue
            received += 1
            if as_json:
                typer.echo(event.model_dump_json())
            else:
                out.print(summary(event))
    if count is not None and received < count:
        err.print(f"timed out after {timeout:g} s: {received} of {count} event(s) received from {endpoint}")
        raise typer.Exit(1)
