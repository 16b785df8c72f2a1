"""``streamproc watchlist``: enrol, list, remove, purge and verify watchlist subjects.

Every change is recorded in the audit log beside the watchlist (who, why, on what legal basis).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamproc.cli.common import (
    ConfigOpt,
    DeviceOpt,
    EmbedderModelOpt,
    EmbedderOpt,
    WatchlistOpt,
    err_console,
    out,
    recognition_config,
)
from streamproc.errors import ConfigError

watchlist_app = typer.Typer(help="Enrol, list, remove and verify watchlist subjects.", no_args_is_help=True)


def _parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO date like 2027-01-31 or 2027-01-31T12:00, not {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_enrolment(
    watchlist: Path,
    subject_id: str,
    images: list[Path],
    face: int | None,
    largest: bool,
    add_templates: bool,
    *texts: str,
) -> None:
    """What can be refused before a model is loaded: options, photos that cannot be read, the wrong directory."""
    from streamproc.search.watchlist import Watchlist
    from streamproc.vision.imageio import read_image

    if face is not None and largest:
        raise ConfigError("--face N and --largest both choose the face to take: give one of them")
    for option, value in zip(
        ("--subject-id", "--name", "--reason", "--operator", "--legal-basis"), (subject_id, *texts), strict=True
    ):
        if not value.strip():
            raise ConfigError(f"{option} must not be empty")
    for image in images:
        read_image(image)  # refuses a missing, unreadable, non-image or truncated photo, naming it
    if watchlist.exists() and not watchlist.is_dir():
        raise ConfigError(f"--watchlist {watchlist} is a file, not a watchlist directory")
    if watchlist.is_dir() and not (watchlist / "watchlist.sqlite").exists():
        if any(watchlist.iterdir()):
            raise ConfigError(f"--watchlist {watchlist} is not a watchlist directory (it holds other files)")
        return
    if watchlist.is_dir():
        with Watchlist.open(watchlist) as wl:
            known = {s.subject_id for s in wl.subjects()}
        if subject_id in known and not add_templates:
            raise ConfigError(
                f"subject {subject_id} is already enrolled; add --add-templates to add these photos to it"
            )
        if subject_id not in known and add_templates:
            raise ConfigError(f"--add-templates: subject {subject_id} is not enrolled; enrol it first (without it)")


@watchlist_app.command("enroll")
def watchlist_enroll(
    watchlist: WatchlistOpt,
    subject_id: Annotated[str, typer.Option("--subject-id", help="Stable identifier of the subject.")],
    name: Annotated[str, typer.Option("--name", help="Display name shown to reviewers.")],
    reason: Annotated[str, typer.Option("--reason", help="Why this person is on the watchlist.")],
    operator: Annotated[str, typer.Option("--operator", help="Who is enrolling (recorded).")],
    legal_basis: Annotated[str, typer.Option("--legal-basis", help="Legal basis / case reference.")],
    images: Annotated[list[Path], typer.Argument(help="One or more photos of the subject.")],
    expires: Annotated[str | None, typer.Option("--expires", help="ISO date after which it stops matching.")] = None,
    face: Annotated[
        int | None, typer.Option("--face", min=0, help="Take face N (0 = most confident) of each photo.")
    ] = None,
    largest: Annotated[bool, typer.Option("--largest", help="Take the largest face of each photo.")] = False,
    add_templates: Annotated[
        bool, typer.Option("--add-templates", help="Add photos to an already enrolled subject.")
    ] = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Enrol a subject from photos.

    Refuses, writing nothing, unreadable photos, photos with no face or several faces, and faces below the
    quality gate."""
    from streamproc.records.audit import AuditLog
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import shipped_calibration
    from streamproc.search.enrol import FaceChoice, templates_from_images
    from streamproc.search.governance import check_collisions, purge_expired
    from streamproc.search.templates import NewSubject
    from streamproc.search.watchlist import Watchlist

    expires_at = _parse_date(expires, "--expires")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ConfigError(f"--expires {expires} is in the past")
    _check_enrolment(watchlist, subject_id, images, face, largest, add_templates, name, reason, operator, legal_basis)
    analyzer = build_analyzer(recognition_config(config, embedder, embedder_model, device))
    templates = templates_from_images(images, analyzer, FaceChoice(index=face, largest=largest))
    shipped = shipped_calibration(analyzer.embedder.identity, analyzer.detector.kind)
    with Watchlist.open_or_create(watchlist, analyzer.embedder.identity) as wl:
        audit = AuditLog.open_or_create(watchlist, actor=operator)  # lives in the watchlist directory
        for gone in purge_expired(wl, audit):
            out.print(f"purged expired subject {gone.subject_id}")
        if shipped is not None:
            threshold = shipped[0].threshold_for(1e-3).distance_threshold
            check_collisions(wl, subject_id, templates, threshold, shipped[0].fair_map)
        subject = wl.enroll(
            NewSubject(
                subject_id=subject_id,
                display_name=name,
                reason=reason,
                legal_basis=legal_basis,
                added_by=operator,
                expires_at=expires_at,
            ),
            templates,
            add_to_existing=add_templates,
        )
    audit.append(
        operator,
        "enrol",
        subject_id=subject_id,
        reason=reason,
        details={
            "legal_basis": legal_basis,
            "templates": len(templates),
            "add_templates": add_templates,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "embedder": analyzer.embedder.identity.kind,
        },
    )
    out.print(f"enrolled {subject.subject_id} ({subject.display_name}): {subject.n_templates} template(s)")


@watchlist_app.command("list")
def watchlist_list(
    watchlist: WatchlistOpt,
    include_removed: Annotated[bool, typer.Option("--include-removed", help="Show removed subjects.")] = False,
) -> None:
    """List enrolled subjects with their reason, legal basis, operator and expiry."""
    from streamproc.search.watchlist import Watchlist

    with Watchlist.open(watchlist) as wl:
        table = Table(title=f"{watchlist} ({wl.embedder.kind}, model {wl.embedder.model_sha256[:12]})")
        for col in ("subject", "name", "templates", "reason", "legal basis", "added by", "added", "expires"):
            table.add_column(col)
        for s in wl.subjects(include_removed=include_removed):
            table.add_row(
                s.subject_id,
                s.display_name,
                str(s.n_templates),
                s.reason,
                s.legal_basis,
                s.added_by,
                s.added_at.date().isoformat(),
                s.expires_at.isoformat(timespec="minutes") if s.expires_at else "-",
            )
        out.print(table)


@watchlist_app.command("remove")
def watchlist_remove(
    watchlist: WatchlistOpt,
    subject_id: Annotated[str, typer.Option("--subject-id", help="Subject to remove.")],
    operator: Annotated[str, typer.Option("--operator", help="Who is removing (recorded).")],
    reason: Annotated[str, typer.Option("--reason", help="Why.")],
    journal: Annotated[
        list[Path] | None,
        typer.Option(
            "--journal", help="Also erase the subject's match events (with face crops) from this event journal."
        ),
    ] = None,
) -> None:
    """Remove a subject: it stops matching at once (running pipelines reload within seconds), its template
    vectors are erased, and with --journal its journaled match events too."""
    from streamproc.feed.journal import EventJournal
    from streamproc.records.audit import AuditLog
    from streamproc.search.watchlist import Watchlist

    for path in journal or []:  # every check before the subject is removed: a refusal changes nothing
        if not path.is_file():
            raise ConfigError(f"--journal {path}: no such journal file")
    with Watchlist.open(watchlist) as wl:
        if subject_id not in {s.subject_id for s in wl.subjects()}:
            raise ConfigError(f"watchlist {watchlist}: unknown subject {subject_id}; list subjects to check the id")
    with Watchlist.open(watchlist, writable=True) as wl:
        wl.remove(subject_id, removed_by=operator, reason=reason)
    AuditLog.open_or_create(watchlist, actor=operator).append(
        operator, "remove", subject_id=subject_id, reason=reason, details={"journals": [str(p) for p in journal or []]}
    )
    out.print(f"removed {subject_id}")
    for path in journal or []:
        if not path.is_file():
            raise ConfigError(f"--journal {path}: no such journal file")
        with EventJournal(path) as events:
            out.print(f"erased {events.erase_subject(subject_id)} event(s) of {subject_id} from {path}")


@watchlist_app.command("purge-expired")
def watchlist_purge_expired(watchlist: WatchlistOpt) -> None:
    """Remove every subject whose expiry has passed (also done at every enrolment and pipeline start)."""
    from streamproc.records.audit import AuditLog
    from streamproc.search.governance import purge_expired
    from streamproc.search.watchlist import Watchlist

    with Watchlist.open(watchlist, writable=True) as wl:
        purged = purge_expired(wl, AuditLog.open_or_create(watchlist))
    for subject in purged:
        out.print(f"purged {subject.subject_id} (expired {subject.expires_at})")
    out.print(f"{len(purged)} expired subject(s) purged")


@watchlist_app.command("verify")
def watchlist_verify(watchlist: WatchlistOpt) -> None:
    """Check that the index, the metadata and the recorded checksums agree. Exits 1 on any problem."""
    from streamproc.search.watchlist import Watchlist

    with Watchlist.open(watchlist) as wl:
        problems = wl.verify()
        n = len(wl)
    if problems:
        for p in problems:
            err_console.print(f"[red]problem:[/red] {p}")
        raise typer.Exit(1)
    out.print(f"{watchlist}: OK ({n} active subject(s); index, metadata and checksums agree)")
