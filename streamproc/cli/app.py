"""The ``streamproc`` command line.

Commands are thin: they parse options, build objects through :mod:`streamproc.runtime.build`, call library
functions and print. User mistakes (any :class:`~streamproc.errors.StreamprocError`) print one line on
stderr and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from streamproc.cli.common import (
    ConfigOpt,
    DeviceOpt,
    EmbedderModelOpt,
    EmbedderOpt,
    NoCacheOpt,
    eval_cache,
    recognition_config,
)
from streamproc.errors import ConfigError, StreamprocError
from streamproc.fsutil import sha256_file

if TYPE_CHECKING:
    from streamproc.config import PipelineConfig

app = typer.Typer(
    name="streamproc",
    help="Accountable face search for body-camera video. A match is a candidate for human review, "
    "never an identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Build, verify and list the default models (offline).", no_args_is_help=True)
watchlist_app = typer.Typer(help="Enrol, list, remove and verify watchlist subjects.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Measure accuracy on labelled data.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(watchlist_app, name="watchlist")
app.add_typer(evaluate_app, name="evaluate")
config_app = typer.Typer(help="Inspect the configuration format.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _mount_subcommands() -> None:
    from streamproc.cli.audit import audit_app
    from streamproc.cli.calibrate import calibrate_command
    from streamproc.cli.demographics import demographics_command
    from streamproc.cli.events import events_app
    from streamproc.cli.keys import keys_app
    from streamproc.cli.review import review_app
    from streamproc.cli.run import child_command

    app.add_typer(events_app, name="events", help="Subscribe to the match event feed.")
    app.add_typer(keys_app, name="keys", help="CURVE key pairs for the secured event feed.")
    app.add_typer(audit_app, name="audit", help="Tamper-evident audit log of the watchlist and its use.")
    app.add_typer(review_app, name="review", help="Human review of match events (confirm / reject).")
    evaluate_app.command("demographics")(demographics_command)
    app.command("calibrate")(calibrate_command)
    app.command("child", hidden=True)(child_command)


_mount_subcommands()

out = Console(soft_wrap=True)
err_console = Console(stderr=True)

CacheDirOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Model cache directory (default: XDG cache).")]
WatchlistOpt = Annotated[Path, typer.Option("--watchlist", "-w", help="Watchlist directory.")]


def _parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO date like 2027-01-31 or 2027-01-31T12:00, not {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------- models
@models_app.command("prepare")
def models_prepare(
    cache_dir: CacheDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False,
) -> None:
    """Build the default detector and embedder from installed packages and record their sha256."""
    from streamproc.models.registry import ModelStore

    store = ModelStore(cache_dir)
    records = store.prepare(force=force, progress=lambda msg: err_console.print(f"[dim]{msg}…[/dim]"))
    for rec in records:
        out.print(f"{rec.name}: {store.cache_dir / rec.path} sha256={rec.sha256}")


@models_app.command("list")
def models_list(cache_dir: CacheDirOpt = None) -> None:
    """Show built models, their hashes and licences (verifying each file's hash)."""
    from streamproc.models.registry import DEFAULT_MODELS, ModelStore

    store = ModelStore(cache_dir)
    table = Table(title=f"models in {store.cache_dir}")
    for col in ("name", "status", "sha256", "size", "built", "licence"):
        table.add_column(col)
    known = {r.name: r for r in store.records()}
    for spec in DEFAULT_MODELS:
        rec = known.get(spec.name)
        if rec is None:
            table.add_row(spec.name, "not built", "", "", "", spec.licence)
            continue
        try:
            store.verify(spec)
            status = "ok"
        except StreamprocError as err:
            status = f"[red]{err}[/red]"
        table.add_row(
            spec.name, status, rec.sha256[:16], f"{rec.size:,}", rec.built_at[:10], rec.licence.split(" (")[0]
        )
    out.print(table)


# ------------------------------------------------------------------------------------- run / validate
def _load_pipeline_config(
    path: Path,
    source: str | None = None,
    watchlist: Path | None = None,
    events: str | None = None,
    metrics_port: int | None = None,
) -> Any:
    from streamproc.config import load_pipeline_config

    cfg = load_pipeline_config(path)
    update: dict[str, Any] = {}
    if source is not None:
        if len(cfg.sources) != 1:
            raise ConfigError(f"--source replaces the one source of a config; {path} has {len(cfg.sources)}")
        update["sources"] = [cfg.sources[0].model_copy(update={"url": source})]
    if watchlist is not None:
        update["watchlist"] = cfg.watchlist.model_copy(update={"path": watchlist})
    if events is not None:
        update["events"] = cfg.events.model_copy(update={"endpoint": events})
    if metrics_port is not None:
        update["metrics"] = cfg.metrics.model_copy(update={"port": metrics_port})
    return cfg.model_copy(update=update)


@app.command("validate")
def validate(config: Annotated[Path, typer.Argument(help="Pipeline YAML config.")]) -> None:
    """Check a pipeline config: every problem is reported with its key path; exit 2 if any."""
    cfg = _load_pipeline_config(config)
    out.print(f"{config}: OK ({len(cfg.sources)} source(s): {', '.join(s.id for s in cfg.sources)})")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the pipeline config (every key, type, bound and description)."""
    import json

    from streamproc.config import PipelineConfig

    sys.stdout.write(json.dumps(PipelineConfig.model_json_schema(), indent=2) + "\n")


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML config (see configs/).")],
    source: Annotated[
        str | None, typer.Option("--source", help="Replace the config's single source (path or URL).")
    ] = None,
    watchlist: Annotated[Path | None, typer.Option("--watchlist", help="Replace watchlist.path.")] = None,
    events: Annotated[str | None, typer.Option("--events", help="Replace events.endpoint.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Replace metrics.port (0 = any free port).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    operator: Annotated[
        str | None, typer.Option("--operator", help="Who starts the pipeline (audit log); default: $USER.")
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="all: the whole pipeline (one process, or a supervisor with scale.workers processes); "
            "embed: only the embed service (binds scale.embed_endpoint); workers: only stream workers, "
            "connecting to scale.embed_endpoint (another host). See docs/scaling.md.",
        ),
    ] = "all",
) -> None:
    """Run the pipeline: decode, detect, track, embed best shots, search, publish match events.

    Stops by itself when every file source ends; SIGINT/SIGTERM drain what is in flight and stop."""
    import os

    from streamproc.records.audit import AuditLog
    from streamproc.stream.authorisation import NotAuthorisedError, check_authorisation

    if role not in ("all", "embed", "workers"):
        raise ConfigError(f"--role must be all, embed or workers, not {role!r}")
    cfg = _load_pipeline_config(config, source, watchlist, events, metrics_port)
    actor = operator or os.environ.get("USER") or "unknown"
    audit = AuditLog.open_or_create(cfg.audit.dir or cfg.watchlist.path, cfg.audit.key, actor=actor)
    if role == "embed":
        from streamproc.runtime.roles import embed_main

        _purge_before_run(cfg.watchlist.path, audit)
        raise typer.Exit(embed_main(cfg, serve_http=True, actor=actor))
    try:
        authorised = check_authorisation(cfg)
    except NotAuthorisedError as err:
        audit.append(actor, "pipeline_refused", details={"config": str(config), "reason": str(err)})
        raise
    if role == "all":  # expiry is enforced where matching runs; stream workers never open the watchlist
        _purge_before_run(cfg.watchlist.path, audit)
    start_details = {  # what is in force, so any change of threshold or config between runs is on record
        "config": str(config),
        "config_sha256": sha256_file(config),
        "effective_config_sha256": hashlib.sha256(cfg.model_dump_json().encode()).hexdigest(),
        "sources": [s.id for s in cfg.sources],
        "role": role,
        "workers": cfg.scale.workers,
        **authorised.audit_details(),
    }
    if role == "workers" or cfg.scale.workers >= 1:
        _run_supervised(cfg, "workers" if role == "workers" else "all", audit, actor, start_details)
        return
    _run_single_process(cfg, audit, actor, start_details, quiet)


def _run_supervised(
    cfg: PipelineConfig, role: Literal["all", "workers"], audit: Any, actor: str, start_details: dict[str, Any]
) -> None:
    from streamproc.cli.run import run_supervised

    audit.append(actor, "pipeline_start", details=start_details)
    code: int = 1
    totals: dict[str, Any] = {}
    try:
        code, totals = run_supervised(cfg, role)
    finally:
        audit.append(
            actor,
            "pipeline_stop",
            details={
                sid: {"frames": t.frames, "embeddings": t.embeddings, "events": t.events} for sid, t in totals.items()
            },
        )
    for sid, t in totals.items():
        _print_stream_summary(sid, t, f"{t.errors} source error(s)" if t.errors else None)
    if code:
        raise typer.Exit(code)


def _run_single_process(
    cfg: PipelineConfig, audit: Any, actor: str, start_details: dict[str, Any], quiet: bool
) -> None:
    import signal

    from prometheus_client import CollectorRegistry

    from streamproc.metrics import serve
    from streamproc.runtime.build import build_pipeline

    registry = CollectorRegistry()
    progress = _RunProgress(cfg, enabled=not quiet)
    pipeline = build_pipeline(cfg, registry, on_frame=progress.frame, audit=audit)
    audit.append(
        actor,
        "pipeline_start",
        details={
            **start_details,
            "threshold": pipeline.threshold.distance,
            "threshold_source": pipeline.threshold.source,
            "target_fmr": pipeline.threshold.fmr_target,
            "uncalibrated": pipeline.threshold.uncalibrated,
            "k_of_n": [cfg.policy.k, cfg.policy.n],
        },
    )
    stats: dict[str, Any] = {}
    server = None
    try:
        if cfg.metrics.port is not None:
            server = serve(registry, cfg.metrics.host, cfg.metrics.port, pipeline.healthy, pipeline.ready)
            err_console.print(f"metrics: {server.url} (probes /healthz, /readyz)")
        err_console.print(f"events: {pipeline.publisher_endpoint} (topics match.<stream>, review.<stream>)")
        if pipeline.replay_endpoint is not None:
            err_console.print(f"replay: {pipeline.replay_endpoint} (events tail --since SEQ --replay …)")

        def on_signal(signum: int, _frame: object) -> None:
            err_console.print(f"{signal.Signals(signum).name}: draining and stopping…")
            pipeline.stop()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        with progress:
            stats = pipeline.run()
    finally:
        pipeline.close()
        if server is not None:
            server.close()
        audit.append(
            actor,
            "pipeline_stop",
            details={  # counts only: comparisons that matched nothing are never logged one by one
                sid: {"frames": st.frames, "faces": st.faces, "embeddings": st.embeddings, "events": st.events}
                for sid, st in stats.items()
            },
        )
    failed = {sid: st.error for sid, st in stats.items() if st.error}
    for sid, st in stats.items():
        _print_stream_summary(sid, st, f"FAILED: {st.error}" if st.error else None)
    if failed:
        raise typer.Exit(1)


def _print_stream_summary(stream: str, totals: Any, problem: str | None) -> None:
    """One line per stream at the end of `run` (same wording in every process layout)."""
    out.print(
        f"{stream}: {totals.frames} frames, {totals.faces} faces, {totals.tracks} tracks, "
        f"{totals.embeddings} best shots embedded, {totals.events} match event(s)"
        + (f" [red]{problem}[/red]" if problem else ""),
        highlight=False,
    )


def _purge_before_run(path: Path, audit: Any) -> None:
    """Expired subjects are purged at start; running pipelines also stop matching them at expiry."""
    from streamproc.errors import WatchlistError
    from streamproc.search.governance import purge_expired
    from streamproc.search.watchlist import Watchlist

    try:
        with Watchlist.open(path, writable=True) as wl:
            for gone in purge_expired(wl, audit):
                err_console.print(f"purged expired subject {gone.subject_id}")
    except WatchlistError as err:
        if "for writing" not in str(err):
            raise
        # Another writer holds it, or the directory is mounted read-only: searches still skip expired entries.
        err_console.print(f"[dim]expiry purge skipped: {err}[/dim]")


class _RunProgress:
    """A rich progress bar per file source (frames processed of the stream's frame count, when known)."""

    def __init__(self, cfg: Any, enabled: bool) -> None:
        from rich.progress import Progress

        self._enabled = enabled and err_console.is_terminal
        self._progress = Progress(console=err_console, transient=False)
        self._tasks = {s.id: self._progress.add_task(s.id, total=None) for s in cfg.sources}

    def frame(self, stream_id: str, _frame: object) -> None:
        if self._enabled:
            self._progress.advance(self._tasks[stream_id])

    def __enter__(self) -> _RunProgress:
        if self._enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._progress.stop()


# ------------------------------------------------------------------------------------------ watchlist
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
    face: Annotated[int | None, typer.Option("--face", help="Take face N (0 = most confident) of each photo.")] = None,
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
    from streamproc.search.watchlist import NewSubject, Watchlist

    expires_at = _parse_date(expires, "--expires")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ConfigError(f"--expires {expires} is in the past")
    analyzer = build_analyzer(recognition_config(config, embedder, embedder_model, device))
    templates = templates_from_images(images, analyzer, FaceChoice(index=face, largest=largest))
    shipped = shipped_calibration(analyzer.embedder.identity)
    with Watchlist.open_or_create(watchlist, analyzer.embedder.identity) as wl:
        audit = AuditLog.open_or_create(watchlist, actor=operator)  # lives in the watchlist directory
        for gone in purge_expired(wl, audit):
            out.print(f"purged expired subject {gone.subject_id}")
        if shipped is not None:
            check_collisions(wl, subject_id, templates, shipped[0].threshold_for(1e-3).distance_threshold)
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


# ------------------------------------------------------------------------------------------- identify
@app.command("identify")
def identify(
    watchlist: WatchlistOpt,
    images: Annotated[list[Path], typer.Argument(help="Photos to search.")],
    operator: Annotated[str, typer.Option("--operator", help="Who is searching (recorded in the audit log).")],
    reason: Annotated[str, typer.Option("--reason", help="Why: case reference or purpose (recorded).")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100, help="Candidates per face.")] = 5,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Search every face in the photos against a watchlist; print candidates with their distance.

    Candidates are leads for human review, not identifications."""
    from streamproc.records.audit import AuditLog
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import shipped_calibration
    from streamproc.search.watchlist import Watchlist
    from streamproc.vision.imageio import read_image

    analyzer = build_analyzer(recognition_config(config, embedder, embedder_model, device))
    shipped = shipped_calibration(analyzer.embedder.identity)
    threshold = shipped[0].threshold_for(1e-3).distance_threshold if shipped else None
    if shipped is not None and threshold is not None:
        out.print(f"threshold: distance <= {threshold:.4f} (calibrated to FMR 1e-3 per comparison, {shipped[1]})")
    else:
        out.print("no calibration for this model: distances are shown without a threshold")
    with Watchlist.open(watchlist, analyzer.embedder.identity) as wl:
        # The search is recorded before it runs: who, why, on what (file names only, never faces).
        AuditLog.open_or_create(watchlist, actor=operator).append(
            operator, "identify", reason=reason, details={"images": [p.name for p in images], "top_k": top_k}
        )
        for path in images:
            faces = analyzer.faces(read_image(path))
            if not faces:
                out.print(f"{path}: no face found")
                continue
            vectors = analyzer.embed(faces)
            for i, (face, results) in enumerate(zip(faces, wl.search(vectors, k=top_k), strict=True)):
                q = face.quality
                gate = "ok" if q.passed else "below quality gate: " + ", ".join(q.reasons)
                box = ",".join(f"{v:.0f}" for v in face.box)
                out.print(f"{path} face {i} box=({box}) quality={q.score:.2f} ({gate})")
                for rank, cand in enumerate(results, 1):
                    under = threshold is not None and cand.distance <= threshold and q.passed
                    out.print(
                        f"  {rank}. {cand.subject_id} ({cand.display_name}) "
                        f"{wl.embedder.metric} distance={cand.distance:.4f}"
                        + ("  <- candidate for human review" if under else ""),
                        highlight=False,
                    )
    out.print("[dim]Candidates are for human review only; a distance is not an identification.[/dim]")


# ----------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Keep the clip, watchlist and demo.yaml here (default: a temp dir)."),
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Run the embedded demo: the whole pipeline, no camera, no internet.

    Makes a body-camera-like clip from images shipped with scikit-image, enrols one face, runs the pipeline
    on the clip and prints the match events a real ZeroMQ subscriber received, and the metrics endpoint."""
    import tempfile
    import threading
    import urllib.request

    from prometheus_client import CollectorRegistry

    from streamproc.cli.demo import DEMO_SUBJECT, prepare_demo
    from streamproc.config import load_pipeline_config
    from streamproc.feed.events import EventSubscriber, MatchEvent
    from streamproc.metrics import serve
    from streamproc.runtime.build import build_analyzer, build_pipeline

    err_console.print("[dim]preparing models (the first run builds them offline)…[/dim]")
    with tempfile.TemporaryDirectory(prefix="streamproc-demo-") as tmp:
        work = workdir or Path(tmp)
        analyzer = build_analyzer(recognition_config(None, device=device))
        assets = prepare_demo(analyzer, work)
        cfg = load_pipeline_config(assets.config)
        # Ephemeral ports, so the demo never collides with a running pipeline.
        cfg = cfg.model_copy(
            update={
                "events": cfg.events.model_copy(update={"endpoint": "tcp://127.0.0.1:*"}),
                "runtime": recognition_config(None, device=device).runtime,
            }
        )
        out.print(f"clip: {assets.clip}  watchlist: {assets.watchlist} (1 subject)  config: {assets.config}")
        registry = CollectorRegistry()
        pipeline = build_pipeline(cfg, registry)
        events: list[MatchEvent] = []
        stop = threading.Event()
        try:
            with serve(registry, "127.0.0.1", 0) as server, EventSubscriber(pipeline.publisher_endpoint) as sub:

                def listen() -> None:
                    while not stop.is_set():
                        event = sub.recv(timeout_s=0.1)
                        if event is not None:
                            events.append(event)

                listener = threading.Thread(target=listen, daemon=True)
                listener.start()
                stop.wait(0.3)  # let the subscription reach the publisher
                out.print(f"events: {pipeline.publisher_endpoint}   metrics: {server.url}")
                stats = pipeline.run()["demo"]
                stop.wait(0.5)
                stop.set()
                listener.join()
                scrape = urllib.request.urlopen(server.url, timeout=10).read().decode()  # noqa: S310 - loopback
        finally:
            stop.set()
            pipeline.close()
    for event in events:
        out.print(
            f"event {event.event_id[:12]} stream={event.stream_id} track={event.track_id} "
            f"candidate={event.subject_id} ({event.subject_name}) {event.metric} distance={event.distance:.3f} "
            f"<= threshold {event.threshold:.3f} ({event.k}-of-{event.n} best shots agree) "
            f"frame t={event.frame_pts_s:.2f}s latency={event.latency_ms['end_to_end']:.0f}ms review={event.review}",
            highlight=False,
        )
    counted = [
        line
        for line in scrape.splitlines()
        if line.startswith(
            (
                "streamproc_frames_processed_total",
                "streamproc_faces_detected_total",
                "streamproc_events_published_total",
            )
        )
    ]
    out.print("scraped from the metrics endpoint: " + "; ".join(counted), highlight=False)
    out.print(
        f"{stats.frames} frames, {stats.faces} faces, {stats.tracks} tracks, {stats.embeddings} best shots embedded, "
        f"{len(events)} event(s). A smoke test, not evidence of accuracy; a candidate is a lead for human "
        "review, never an identification.",
        highlight=False,
    )
    if (
        stats.error
        or not any(e.subject_id == DEMO_SUBJECT for e in events)
        or any(e.subject_id != DEMO_SUBJECT for e in events)
    ):
        err_console.print("demo did not produce the expected single-subject match", highlight=False)
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------- evaluate
@evaluate_app.command("verification")
def evaluate_verification(
    pairs: Annotated[Path, typer.Option("--pairs", help="LFW View-2 style pairs file.")],
    images: Annotated[Path, typer.Option("--images", help="Directory of <person>/<person>_NNNN.jpg images.")],
    report: Annotated[Path | None, typer.Option("--report", help="Write report.json/.md and plots here.")] = None,
    calibration_out: Annotated[
        Path | None, typer.Option("--calibration-out", help="Write all-pairs thresholds as a calibration file.")
    ] = None,
    all_pairs: Annotated[
        bool, typer.Option("--all-pairs/--no-all-pairs", help="Also score every pair among the images.")
    ] = True,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """1:1 verification (LFW View-2 protocol).

    k-fold accuracy and TAR at FMR 1e-2/1e-3 on the pairs; TAR at FMR 1e-3/1e-4/1e-5 over all pairs among the
    images. Undetected faces count as non-matches (failure to detect is reported separately, never rescued
    by a crop)."""
    from rich.progress import Progress

    from streamproc.eval.report import format_headline_lines, write_verification_report
    from streamproc.eval.verification import run_verification
    from streamproc.runtime.build import build_analyzer
    from streamproc.sysinfo import machine_description

    cfg = recognition_config(config, embedder, embedder_model, device)
    analyzer = build_analyzer(cfg)
    ident = analyzer.embedder.identity
    extra = {
        "embedder": ident.kind,
        "model_sha256": ident.model_sha256,
        "detector": analyzer.detector.cache_key,
        "pairs": str(pairs),
        "machine": machine_description(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cache = eval_cache(analyzer, no_cache, cfg.models.cache_dir)
    try:
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("embedding images", total=None)
            result = run_verification(
                pairs,
                images,
                analyzer,
                cache,
                name=f"{ident.kind} on {pairs.name}",
                extra=extra,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                all_pairs=all_pairs,
            )
    finally:
        if cache is not None:
            cache.close()
    if report is not None:
        write_verification_report(result.report, result.genuine, result.impostor, report)
        out.print(f"report written to {report}")
    if calibration_out is not None:
        _write_pairs_calibration(result, calibration_out, pairs)
        out.print(f"calibration written to {calibration_out}")
    for line in format_headline_lines(result.report):
        out.print(line, highlight=False)


@evaluate_app.command("identification")
def evaluate_identification(
    images: Annotated[Path, typer.Option("--images", help="Directory of <person>/<photo> folders.")],
    enrolled_fraction: Annotated[
        float, typer.Option("--enrolled-fraction", min=0.05, max=0.95, help="Share of persons enrolled.")
    ] = 0.5,
    max_probes: Annotated[int, typer.Option("--max-probes", min=1, help="Mated probes per enrolled person.")] = 2,
    max_persons: Annotated[
        int | None, typer.Option("--max-persons", min=2, help="Use a seeded sample of this many persons.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the enrolled/non-enrolled split.")] = 0,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Distance threshold to count false candidates at (default: calibrated)."),
    ] = None,
    no_cache: NoCacheOpt = False,
    config: ConfigOpt = None,
    embedder: EmbedderOpt = None,
    embedder_model: EmbedderModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Open-set 1:N identification.

    FNIR at FPIR 1e-1/1e-2/1e-3, and the false candidates at a distance threshold (the shipped calibration's
    FMR 1e-3 threshold unless --threshold is given)."""
    from rich.progress import Progress

    from streamproc.eval.identification import run_identification, split_persons
    from streamproc.runtime.build import build_analyzer
    from streamproc.search.calibration import shipped_calibration

    analyzer = build_analyzer(recognition_config(config, embedder, embedder_model, device))
    if threshold is None:
        shipped = shipped_calibration(analyzer.embedder.identity)
        if shipped is not None:
            threshold = shipped[0].threshold_for(1e-3).distance_threshold
    split = split_persons(images, enrolled_fraction, seed, max_probes, max_persons)
    cache = eval_cache(analyzer, no_cache, None)
    try:
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("embedding images", total=None)
            result = run_identification(
                split,
                analyzer,
                cache,
                {"1e-1": 1e-1, "1e-2": 1e-2, "1e-3": 1e-3},
                threshold,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        if cache is not None:
            cache.close()
    counts = result.split_counts
    out.print(
        f"gallery {counts['gallery']} persons, {counts['mated_probes']} mated probes, "
        f"{counts['nonmated_probes']} non-mated probes; {result.failed_images} image(s) without a face"
    )
    for key, point in result.at_fpir.items():
        out.print(f"FNIR@FPIR{key}: {point.fnir:.4f} (threshold similarity {point.threshold:.4f})", highlight=False)
    headline = [f"fnir_at_fpir_1e-2={result.at_fpir['1e-2'].fnir:.4f}"]
    if result.at_threshold is not None:
        t = result.at_threshold
        out.print(
            f"at distance <= {result.distance_threshold:.4f}: FPIR {t.fpir:.4f} ({round(t.fpir * t.n_nonmated)}"
            f"/{t.n_nonmated} non-mated probes flagged), FNIR {t.fnir:.4f}, {t.false_candidates} false candidate(s)",
            highlight=False,
        )
        headline += [f"fpir={t.fpir:.4f}", f"fnir={t.fnir:.4f}", f"false_candidates={t.false_candidates}"]
    out.print(" ".join(headline), highlight=False)


def _write_pairs_calibration(result: Any, path: Path, pairs: Path) -> None:
    from streamproc.eval.metrics import clopper_pearson
    from streamproc.search.calibration import Calibration, OperatingPoint, save_calibration, similarity_to_distance

    rep = result.report
    if rep.all_pairs is None:
        raise ConfigError("--calibration-out needs --all-pairs (thresholds come from all impostor pairs)")
    points = []
    for key, t in result.all_thresholds.items():
        n_imp = result.all_n_impostor
        accepted = result.all_accepted[key]
        points.append(
            OperatingPoint(
                fmr_target=float(key),
                distance_threshold=similarity_to_distance(t, result.metric),
                impostor_accepted=accepted,
                n_impostor=n_imp,
                fmr_upper95=clopper_pearson(accepted, n_imp)[1],
                tar=rep.all_pairs[f"TAR@FMR{key}"],
                n_genuine=int(rep.all_pairs["n_genuine"]),
            )
        )
    save_calibration(
        Calibration(
            embedder=rep.extra["embedder"],
            model_sha256=rep.extra["model_sha256"],
            metric=result.metric,
            data=f"all pairs among the images of {pairs.name} (LFW deep-funneled, public half)",
            created=rep.extra["date"],
            command=" ".join(sys.argv[1:]),
            points=tuple(points),
            notes=(
                "each threshold admits at most floor(fmr * n_impostor) impostor pairs; impostor_accepted counts them",
                "FMR is per comparison; a watchlist's false alarm rate grows with its size",
            ),
        ),
        path,
    )


# ------------------------------------------------------------------------------------------- entry
def main() -> None:
    """Console entry point: one-line errors for user mistakes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except StreamprocError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # files and sockets the user pointed at: unwritable, missing, not a directory
        where = f": {err.filename}" if err.filename else ""
        err_console.print(f"[red]error:[/red] {err.strerror or err}{where}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
