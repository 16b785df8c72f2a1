"""``streamproc watchlist reenroll``: switch a watchlist to the configured embedder from its stored enrolment chips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamproc.cli.common import (
    ConfigOpt,
    DeviceOpt,
    EmbedderModelOpt,
    EmbedderOpt,
    WatchlistOpt,
    out,
    recognition_config,
)


def reenroll_command(
    watchlist: WatchlistOpt,
    new: Annotated[Path, typer.Option("--out", help="New watchlist directory (must not exist).")],
    operator: Annotated[str, typer.Option("--operator", help="Who is re-enrolling (recorded).")],
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Enrol every active subject again, with the configured embedder, from the aligned chips the watchlist kept.

    The old watchlist is only read; the new one (same subjects, reasons, legal bases and expiry) is written to
    --out. Refused, writing nothing, if a subject has templates without a chip (enrol it from its photos)."""
    from streamproc.records.audit import AuditLog
    from streamproc.runtime.build import build_embedder
    from streamproc.runtime.reenrol import reenrol

    embedder_obj = build_embedder(recognition_config(config, embedder, embedder_model, device))
    done = reenrol(watchlist, new, embedder_obj, operator)
    audit = AuditLog.open_or_create(new, actor=operator)
    for item in done:
        s = item.subject
        audit.append(
            operator,
            "enrol",
            subject_id=s.subject_id,
            reason=s.reason,
            details={
                "legal_basis": s.legal_basis,
                "templates": item.templates,
                "reenrolled_from": str(watchlist),
                "expires_at": s.expires_at.isoformat() if s.expires_at else None,
                "embedder": embedder_obj.identity.kind,
            },
        )
    kind = embedder_obj.identity.kind
    out.print(f"re-enrolled {len(done)} subject(s) from {watchlist} into {new} ({kind}); point watchlist.path at it")
