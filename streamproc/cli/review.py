"""``streamproc review``: decide on match events (confirm / reject), list and show them, serve the review console,
manage reviewer accounts.

Every decision and every saved face is made by an authenticated account (``--as ID`` with its password, or
``--key-file`` from ``review reviewers issue-key``), never by a typed name.

Mounted by :mod:`streamproc.cli` as ``app.add_typer(review_app, name="review")``. Exit codes: 0 done, 1 the
rules refused the decision (:class:`~streamproc.govern.review.ReviewRefusedError`, printed as one line here), 2 a usage
mistake (any other :class:`~streamproc.errors.StreamprocError`, printed as one line by ``cli.main``).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamproc.config import PipelineConfig, ReviewConfig, load_pipeline_config
from streamproc.feed.event_feed import awaiting_publication
from streamproc.feed.schema import ReviewDecision, ReviewEvent, ReviewStatus
from streamproc.govern.accounts import (
    ROLES,
    AccountError,
    Reviewer,
    ReviewerStore,
    Role,
    accounts_path,
    audit_dir,
    check_new_account,
)
from streamproc.govern.review import (
    ReviewRefusedError,
    ReviewState,
    audit_view,
    decide,
    open_journal,
    reopen,
    resolve_event_id,
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
EventIdArg = Annotated[
    str, typer.Argument(help="event_id of the match event: all 32 hex characters or a unique prefix (>= 4).")
]
AsOpt = Annotated[
    str | None,
    typer.Option("--as", help="Your reviewer account; the password is asked for (or read from a piped stdin)."),
]
KeyFileOpt = Annotated[
    Path | None, typer.Option("--key-file", help="Your reviewer key file (`review reviewers issue-key`).")
]
OperatorOpt = Annotated[str, typer.Option("--operator", help="Who makes this account change (audited).")]

_out = Console(soft_wrap=True, markup=False, highlight=False)
_err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def _read_password(prompt: str) -> str:
    """A password from the terminal (not echoed), or the first line of a piped stdin (scripted desks)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def _authenticate(cfg: PipelineConfig, as_id: str | None, key_file: Path | None) -> Reviewer:
    """The account proven by ``--as`` + password or by ``--key-file``; a usage error otherwise."""
    if (as_id is None) == (key_file is None):
        raise AccountError("authenticate with exactly one of --as ID (password) or --key-file FILE")
    with ReviewerStore.open(accounts_path(cfg)) as store:
        if key_file is not None:
            return store.authenticate_key(key_file.read_text(encoding="utf-8", errors="replace"))
        assert as_id is not None
        return store.authenticate(as_id, _read_password(f"password for {as_id}: "))


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@review_app.command("decide")
def decide_command(
    event_id: EventIdArg,
    note: Annotated[str, typer.Option("--note", help="Why you confirm or reject (recorded; required).")],
    config: RunConfigOpt,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="The probe and the subject are the same person.", show_default=False)
    ] = False,
    reject: Annotated[
        bool, typer.Option("--reject", help="They are not, or you cannot tell.", show_default=False)
    ] = False,
    as_id: AsOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Confirm or reject a match event as your reviewer account. One reject rejects it; review.confirmations
    distinct accounts must confirm it.

    The decision is stored in the event journal and the audit log under the authenticated account; a running
    pipeline publishes it on review.<stream>. Exit 1 when the rules refuse it (already decided by you, already
    final, unknown event)."""
    if confirm == reject:
        raise typer.BadParameter("give exactly one of --confirm or --reject", param_hint="--confirm/--reject")
    decision: ReviewDecision = "confirm" if confirm else "reject"
    cfg = load_pipeline_config(config)
    with open_journal(cfg.events.journal.path, str(config)) as journal:
        reviewer = _authenticate(cfg, as_id, key_file).id

        def audit() -> AuditLog:
            return AuditLog.open_or_create(audit_dir(cfg), cfg.audit.key, actor=reviewer)

        try:
            event_id = resolve_event_id(journal, event_id)
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


@review_app.command("reopen")
def reopen_command(
    event_id: EventIdArg,
    note: Annotated[str, typer.Option("--note", help="Why the decision is reopened (recorded; required).")],
    config: RunConfigOpt,
    as_id: AsOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """Supervisors: send a confirmed or rejected candidate back to review (a new round; audited, published)."""
    cfg = load_pipeline_config(config)
    with open_journal(cfg.events.journal.path, str(config)) as journal:
        supervisor = _authenticate(cfg, as_id, key_file)

        def audit() -> AuditLog:
            return AuditLog.open_or_create(audit_dir(cfg), cfg.audit.key, actor=supervisor.id)

        try:
            event_id = resolve_event_id(journal, event_id)
            review = reopen(journal, audit, event_id, supervisor, note, required=cfg.review.confirmations)
        except ReviewRefusedError as refused:
            _err.print(f"refused: {refused}")
            raise typer.Exit(1) from None
    _out.print(f"{event_id}: reopened by {supervisor.id} as seq {review.seq}; status pending, a new round begins")


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
    save_face: Annotated[
        Path | None,
        typer.Option(
            "--save-face", help="Write the probe's face JPEG to this new file (needs --as/--key-file; audited)."
        ),
    ] = None,
    as_id: AsOpt = None,
    key_file: KeyFileOpt = None,
) -> None:
    """The event's evidence (without the face image) and every decision on it; --save-face writes the face."""
    cfg = load_pipeline_config(config)
    if save_face is not None and (save_face.exists() or not save_face.parent.is_dir()):
        raise AccountError(f"--save-face {save_face}: " + ("exists" if save_face.exists() else "no such directory"))
    with open_journal(cfg.events.journal.path, str(config)) as journal:
        s = state(journal, resolve_event_id(journal, event_id))
        if save_face is not None:
            _save_face(cfg, s, save_face, _authenticate(cfg, as_id, key_file))
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
        calibration = f"{cal.source or '-'} fmr_target={cal.fmr_target:.3g} fpir/track={fpir}"
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
        f"yaw={_or_unknown(q.yaw, '.2f')} detector={q.detector_score:.2f}",
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


def _save_face(cfg: PipelineConfig, s: ReviewState, path: Path, reviewer: Reviewer) -> None:
    """Write the probe JPEG (new file, mode 0600) after auditing the access: no unaudited copy of a face."""
    jpeg = s.event.face_jpeg()
    if jpeg is None:
        raise AccountError(f"event {s.event.event_id} carries no face image (events.include_face_jpeg was off)")
    audit_view(
        AuditLog.open_or_create(audit_dir(cfg), cfg.audit.key, actor=reviewer.id),
        reviewer.id,
        s.event,
        f"saved_face:{path.resolve()}",
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(jpeg)
    _err.print(f"face of event {s.event.event_id} written to {path} ({len(jpeg)} bytes; audited)")


def _or_unknown(value: object, spec: str = "") -> str:
    """``value`` formatted with ``spec`` (e.g. ``.2f``: no 17-digit floats on screen), or ``unknown``."""
    return "unknown" if value is None else format(value, spec)


def _review_row(r: ReviewEvent) -> list[str | Text]:
    confirmations = f" ({len(r.confirmations)}/{r.required_confirmations})"
    return [str(r.seq), _utc(r.decided_at), Text(r.reviewer), r.decision, r.status + confirmations, Text(r.note)]


reviewers_app = typer.Typer(
    help="Reviewer accounts for the console and `review decide` (passwords scrypt-hashed; changes audited).",
    no_args_is_help=True,
    add_completion=False,
)
review_app.add_typer(reviewers_app, name="reviewers")


def _account_audit(cfg: PipelineConfig, operator: str, action: str, reviewer: Reviewer) -> None:
    AuditLog.open_or_create(audit_dir(cfg), cfg.audit.key, actor=operator).append(
        operator, action, details={"reviewer": reviewer.id, "role": reviewer.role, "active": reviewer.active}
    )


@reviewers_app.command("add")
def reviewers_add(
    config: RunConfigOpt,
    reviewer_id: Annotated[str, typer.Option("--id", help="Login id (a badge or staff id; never reused).")],
    name: Annotated[str, typer.Option("--name", help="Display name shown with decisions.")],
    operator: OperatorOpt,
    role: Annotated[str, typer.Option("--role", help="reviewer, or supervisor (may also reopen).")] = "reviewer",
) -> None:
    """Add an account. The password (at least 12 characters) is asked for twice, or read from a piped stdin."""
    if role not in ROLES:
        raise typer.BadParameter(f"must be reviewer or supervisor, not {role!r}", param_hint="--role")
    cfg = load_pipeline_config(config)
    password = _read_password(f"new password for {reviewer_id}: ")
    if sys.stdin.isatty() and getpass.getpass("again: ") != password:
        raise AccountError("the two passwords differ")
    checked: Role = "supervisor" if role == "supervisor" else "reviewer"
    check_new_account(reviewer_id, name, checked, password)
    with ReviewerStore.open(accounts_path(cfg), create=True) as store:
        added = store.add(reviewer_id, name, checked, password)
    _account_audit(cfg, operator, "reviewer_add", added)
    _out.print(f"reviewer {added.id} ({added.display_name}, {added.role}) added to {accounts_path(cfg)}")


def _set_active(config: Path, reviewer_id: str, operator: str, active: bool) -> None:
    cfg = load_pipeline_config(config)
    with ReviewerStore.open(accounts_path(cfg)) as store:
        changed = store.set_active(reviewer_id, active)
    _account_audit(cfg, operator, "reviewer_enable" if active else "reviewer_disable", changed)
    _out.print(f"reviewer {changed.id} {'enabled (lock-out cleared)' if active else 'disabled; its sessions end'}")


@reviewers_app.command("disable")
def reviewers_disable(
    config: RunConfigOpt,
    reviewer_id: Annotated[str, typer.Option("--id", help="The account.")],
    operator: OperatorOpt,
) -> None:
    """Disable an account: its console sessions and key stop working at once (decisions stay attributed)."""
    _set_active(config, reviewer_id, operator, active=False)


@reviewers_app.command("enable")
def reviewers_enable(
    config: RunConfigOpt,
    reviewer_id: Annotated[str, typer.Option("--id", help="The account.")],
    operator: OperatorOpt,
) -> None:
    """Enable an account again; also clears a lock-out after wrong passwords."""
    _set_active(config, reviewer_id, operator, active=True)


@reviewers_app.command("issue-key")
def reviewers_issue_key(
    config: RunConfigOpt,
    reviewer_id: Annotated[str, typer.Option("--id", help="The account.")],
    out: Annotated[Path, typer.Option("--out", help="New key file to write (mode 0600); give it to the reviewer.")],
    operator: OperatorOpt,
) -> None:
    """A key file for scripted `review decide --key-file` (replaces the account's previous key)."""
    if out.exists() or not out.parent.is_dir():
        raise AccountError(f"--out {out}: " + ("exists" if out.exists() else "no such directory"))
    cfg = load_pipeline_config(config)
    with ReviewerStore.open(accounts_path(cfg)) as store:
        account = store.require(reviewer_id)
        text = store.issue_key(reviewer_id)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    _account_audit(cfg, operator, "reviewer_key", account)
    _out.print(f"key for {reviewer_id} written to {out}; the previous key (if any) no longer works")


@reviewers_app.command("list")
def reviewers_list(config: RunConfigOpt) -> None:
    """The accounts: id, name, role, enabled, lock-out, key."""
    cfg = load_pipeline_config(config)
    with ReviewerStore.open(accounts_path(cfg)) as store:
        accounts = store.all()
    now = datetime.now(UTC).timestamp()
    table = Table(title=f"{len(accounts)} reviewer account(s)")
    for name in ("id", "name", "role", "state", "key", "created (UTC)"):
        table.add_column(name, overflow="fold")
    for a in accounts:
        status = "disabled" if not a.active else ("locked" if a.locked(now) else "active")
        table.add_row(
            Text(a.id), Text(a.display_name), a.role, status, "yes" if a.has_key else "no", _utc(a.created_at)
        )
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)


@review_app.command("serve")
def serve_command(
    config: RunConfigOpt,
    listen: Annotated[
        str | None, typer.Option("--listen", help="HOST:PORT to bind (default review.listen, 127.0.0.1:8088).")
    ] = None,
    trusted_user_header: Annotated[
        str | None,
        typer.Option(
            "--trusted-user-header",
            help="Single sign-on: take the reviewer id from this header set by the proxy in front (loopback only).",
        ),
    ] = None,
) -> None:
    """The review console: a web page where signed-in reviewers confirm or reject candidates (docs/review.md)."""
    from streamproc.desk.server import serve

    cfg = load_pipeline_config(config)
    if listen is not None:
        try:
            review = ReviewConfig.model_validate({**cfg.review.model_dump(), "listen": listen})
        except ValidationError:
            raise typer.BadParameter(f"must be HOST:PORT, not {listen!r}", param_hint="--listen") from None
        cfg = cfg.model_copy(update={"review": review})
    serve(cfg, str(config), trusted_user_header)


__all__ = ["review_app"]
