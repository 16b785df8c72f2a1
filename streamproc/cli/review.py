"""``streamproc review``: decide on match events (confirm / reject), list them by status, show one.

Mounted by :mod:`streamproc.cli.app` as ``app.add_typer(review_app, name="review")``. Exit codes: 0 done, 1 the
rules refused the decision (:class:`~streamproc.govern.review.ReviewRefusedError`, printed as one line here), 2 a usage
mistake (any other :class:`~streamproc.errors.StreamprocError`, printed as one line by ``cli.main``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamproc.config import PipelineConfig, load_pipeline_config
from streamproc.feed.event_feed import awaiting_publication
from streamproc.feed.events import ReviewDecision, ReviewEvent, ReviewStatus
from streamproc.govern.review import (
    ReviewRefusedError,
    ReviewState,
    decide,
    open_journal,
    state,
    states,
)
from streamproc.records.audit import AuditLog

review_app = typer.Typer(
    help="Human review of match events: confirm or reject candidates (two-person rule), list and show them.",
    no_args_is_help=True,
    add_completion=False,
)

RunConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="The pipeline's run YAML (events.journal.path, review, audit).")
]
EventIdArg = Annotated[str, typer.Argument(help="event_id of the match event (32 hex characters).")]

_out = Console(soft_wrap=True, markup=False, highlight=False)
_err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def _audit_dir(cfg: PipelineConfig) -> Path:
    """Where ``streamproc run`` keeps the audit log: ``audit.dir``, else the watchlist directory."""
    return cfg.audit.dir or cfg.watchlist.path


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@review_app.command("decide")
def decide_command(
    event_id: EventIdArg,
    reviewer: Annotated[str, typer.Option("--reviewer", help="Your reviewer id (recorded with the decision).")],
    note: Annotated[str, typer.Option("--note", help="Why you confirm or reject (recorded; required).")],
    config: RunConfigOpt,
    confirm: Annotated[bool, typer.Option("--confirm", help="The probe and the subject are the same person.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="They are not, or you cannot tell.")] = False,
) -> None:
    """Confirm or reject a match event. One reject rejects it; review.confirmations reviewers must confirm it.

    The decision is stored in the event journal and the audit log; a running pipeline publishes it on
    review.<stream>. Exit 1 when the rules refuse it (already decided by you, already final, unknown event)."""
    if confirm == reject:
        raise typer.BadParameter("give exactly one of --confirm or --reject", param_hint="--confirm/--reject")
    decision: ReviewDecision = "confirm" if confirm else "reject"
    cfg = load_pipeline_config(config)
    with open_journal(cfg.events.journal.path, str(config)) as journal:

        def audit() -> AuditLog:
            return AuditLog.open_or_create(_audit_dir(cfg), cfg.audit.key, actor=reviewer)

        try:
            review = decide(journal, audit, event_id, decision, reviewer, note, required=cfg.review.confirmations)
        except ReviewRefusedError as refused:
            _err.print(f"refused: {refused}")
            raise typer.Exit(1) from None
        waiting = len(awaiting_publication(journal))
    _out.print(
        f"{event_id}: {decision} by {reviewer} stored as seq {review.seq}; status {review.status} "
        f"({len(review.confirmations)}/{review.required_confirmations} confirmations)"
    )
    if waiting:
        _err.print(
            f"{waiting} decision(s) await publication on review.<stream> by the running pipeline; until then they "
            "are in the journal (events tail --since SEQ --replay ...)"
        )


@review_app.command("list")
def list_command(
    config: RunConfigOpt,
    status: Annotated[
        str | None, typer.Option("--status", help="Only events in this status: pending, confirmed or rejected.")
    ] = None,
) -> None:
    """Table of the journaled match events and their review status, oldest first."""
    if status not in (None, "pending", "confirmed", "rejected"):
        raise typer.BadParameter(f"must be pending, confirmed or rejected, not {status!r}", param_hint="--status")
    wanted: ReviewStatus | None = status  # type: ignore[assignment]  # checked just above
    cfg = load_pipeline_config(config)
    with open_journal(cfg.events.journal.path, str(config)) as journal:
        found = states(journal, wanted)
    table = Table(title=f"{len(found)} match event(s){'' if status is None else f' {status}'}")
    for name in ("seq", "event_id", "captured (UTC)", "stream", "candidate", "distance / threshold", "status"):
        # Whole event ids, so they can be copied into `review decide`; other cells fold rather than vanish.
        table.add_column(name, overflow="fold", min_width=32 if name == "event_id" else None)
    table.add_column("confirmed by", overflow="fold")
    for s in found:
        e = s.event
        required = s.reviews[-1].required_confirmations if s.reviews else None
        count = f"{len(s.confirmations)}/{required}" if required is not None else "0"
        table.add_row(
            str(e.seq),
            e.event_id,
            _utc(e.captured_at),
            Text(e.stream_id),
            Text(f"{e.subject_id} ({e.subject_name})"),
            f"{e.distance:.4f} / {e.threshold:.4f}" + (" UNCALIBRATED" if e.uncalibrated else ""),
            s.status,
            Text(f"{count} {', '.join(s.confirmations)}".strip()),
        )
    # A pipe gets whole rows (rich would squeeze the table into 80 columns); a terminal gets its own width.
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)


def _evidence(s: ReviewState) -> dict[str, Any]:
    """The event as stored, without the face image bytes (their size says whether there is one)."""
    data = s.event.model_dump(mode="json", exclude={"face_jpeg_b64"})
    jpeg = s.event.face_jpeg()
    data["face_jpeg_bytes"] = None if jpeg is None else len(jpeg)
    return data


@review_app.command("show")
def show_command(
    event_id: EventIdArg,
    config: RunConfigOpt,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: evidence, status and decisions.")] = False,
) -> None:
    """The event's evidence (without the face image) and every decision on it."""
    cfg = load_pipeline_config(config)
    with open_journal(cfg.events.journal.path, str(config)) as journal:
        s = state(journal, event_id)
    evidence = _evidence(s)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "event": evidence,
                    "status": s.status,
                    "decisions": [r.model_dump(mode="json") for r in s.reviews],
                },
                sort_keys=True,
            )
        )
        return
    e = s.event
    cal = e.calibration
    if cal is None:
        calibration = "none (treat as uncalibrated)"
    else:
        fpir = "not measured" if cal.fpir is None else f"{cal.fpir:.4g}"
        calibration = f"{cal.source or '-'} fmr_target={cal.fmr_target:g} fpir/track={fpir}"
        calibration += " UNCALIBRATED" if cal.uncalibrated else ""
    q = e.quality
    lines = [
        f"event {e.event_id} (seq {e.seq}, schema {e.schema_version}): {s.status}",
        e.notice,
        f"stream {e.stream_id}  track {e.track_id}  captured {_utc(e.captured_at)}  frame {e.frame_pts_s:.3f} s",
        f"candidate {e.subject_id} ({e.subject_name})  template {_or_unknown(e.template_label)}  "
        f"gallery {_or_unknown(e.gallery_size)} subjects",
        f"distance {e.distance:.4f} {e.metric} <= threshold {e.threshold:.4f}; {e.k}-of-{e.n} shots agreed: "
        + ", ".join(f"{d:.4f}" for d in e.distances),
        f"calibration {calibration}",
        f"quality score={q.score:.2f} face_px={q.face_px:.0f} sharpness={q.sharpness:.0f} "
        f"yaw={_or_unknown(q.yaw)} detector={q.detector_score:.2f}",
        f"box {', '.join(f'{v:.0f}' for v in e.box)}",
        "face image: "
        + ("none" if evidence["face_jpeg_bytes"] is None else f"{evidence['face_jpeg_bytes']} bytes JPEG (not shown)"),
    ]
    for line in lines:
        _out.print(line)
    if not s.reviews:
        _out.print("decisions: none yet")
        return
    table = Table(title="decisions")
    for name in ("seq", "decided (UTC)", "reviewer", "decision", "status after", "note"):
        table.add_column(name)
    for r in s.reviews:
        table.add_row(*_review_row(r))
    _out.print(table)


def _or_unknown(value: object) -> str:
    return "unknown" if value is None else str(value)


def _review_row(r: ReviewEvent) -> list[str | Text]:
    confirmations = f" ({len(r.confirmations)}/{r.required_confirmations})"
    return [str(r.seq), _utc(r.decided_at), Text(r.reviewer), r.decision, r.status + confirmations, Text(r.note)]


__all__ = ["review_app"]
