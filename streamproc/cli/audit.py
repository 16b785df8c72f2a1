"""``streamproc audit``: verify, checkpoint, show and repair the tamper-evident audit log.

Mounted by :mod:`streamproc.cli` as ``app.add_typer(audit_app, name="audit")``. ``verify`` exits 1 on
any problem (including a missing log or key: an unverifiable log is a finding, not a usage error);
other commands raise :class:`~streamproc.errors.StreamprocError`, which ``cli.main`` prints as one line.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from streamproc.fsutil import atomic_write_bytes
from streamproc.records.audit import LOG_FILE, AuditLog
from streamproc.records.chain import AuditError, AuditRecord, Checkpoint

audit_app = typer.Typer(
    help="Verify, checkpoint, show and repair the tamper-evident audit log.",
    no_args_is_help=True,
    add_completion=False,
)

WatchlistOpt = Annotated[Path, typer.Option("--watchlist", "-w", help="Watchlist directory (holds audit.log).")]
KeyOpt = Annotated[
    Path | None, typer.Option("--key", help="HMAC key file, if not DIR/audit.key (e.g. kept off this disk).")
]


@audit_app.command("verify")
def verify(
    watchlist: WatchlistOpt,
    key: KeyOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="A checkpoint exported earlier: also detects records cut off the tail."),
    ] = None,
) -> None:
    """Check every record's chain link, hash and MAC, and the checkpoint if given. Exits 1 on any problem."""
    try:
        cp = Checkpoint.from_json(checkpoint.read_text(encoding="utf-8")) if checkpoint is not None else None
        log = AuditLog.open(watchlist, key)
        problems = log.verify(cp)
        head = None if problems else log.head()
    except (AuditError, OSError) as err:
        typer.echo(f"problem: {err}", err=True)
        raise typer.Exit(1) from None
    if problems or head is None:
        for p in problems:
            typer.echo(f"problem: {p}", err=True)
        typer.echo(f"{watchlist / LOG_FILE}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    against = f"; matches checkpoint at seq {cp.seq}" if cp else "; no checkpoint given, tail truncation not checked"
    typer.echo(f"{watchlist / LOG_FILE}: OK ({head.seq} records, chain and MACs valid, head {head.hash[:16]}{against})")


@audit_app.command("checkpoint")
def checkpoint(
    watchlist: WatchlistOpt,
    key: KeyOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the checkpoint here (default: stdout).")] = None,
    operator: Annotated[str | None, typer.Option("--operator", help="Who takes it (default: login name).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
) -> None:
    """Log a checkpoint record and export the head (seq, hash, MAC) to store somewhere else."""
    log = AuditLog.open(watchlist, key)
    log.append(
        operator or getpass.getuser(),
        "checkpoint",
        reason=reason,
        details={"out": str(out) if out else "stdout"},
    )
    text = log.head().to_json() + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_bytes(out, text.encode("utf-8"))
        typer.echo(f"checkpoint written to {out}; store a copy away from {watchlist}", err=True)


@audit_app.command("show")
def show(
    watchlist: WatchlistOpt,
    key: KeyOpt = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Only records about this subject.")] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the last N (matching) records.")] = None,
) -> None:
    """Print records, one per line (not verified: run `audit verify` for that)."""
    log = AuditLog.open(watchlist, key)
    records = [r for r in log.records() if subject is None or r.subject_id == subject]
    for r in records[-last:] if last else records:
        typer.echo(_line(r))


@audit_app.command("repair")
def repair(
    watchlist: WatchlistOpt,
    operator: Annotated[str, typer.Option("--operator", help="Who repairs (recorded).")],
    truncate_torn_tail: Annotated[
        bool, typer.Option("--truncate-torn-tail", help="Cut off an incomplete last line (required).")
    ] = False,
    key: KeyOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
) -> None:
    """Cut off a torn last line left by a crash mid-write, and log that (with a hash of the bytes dropped)."""
    if not truncate_torn_tail:
        raise typer.BadParameter("say --truncate-torn-tail: it is the only repair, and it drops data")
    record = AuditLog.open(watchlist, key).repair_torn_tail(operator, reason)
    typer.echo(f"torn tail removed ({record.details['bytes_dropped']} bytes); logged as seq {record.seq}")


def _line(r: AuditRecord) -> str:
    subject = f" subject={r.subject_id}" if r.subject_id else ""
    details = f" {json.dumps(dict(r.details), sort_keys=True)}" if r.details else ""
    reason = f" reason={r.reason!r}" if r.reason else ""
    return f"{r.seq} {r.at.isoformat(timespec='seconds')} {r.actor} {r.action}{subject}{reason}{details}"


__all__ = ["audit_app"]
