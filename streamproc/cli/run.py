"""``streamproc run``: the pipeline in one process or the multi-process layout (``scale.workers >= 1`` or
``--role``), and the hidden ``streamproc child`` command the supervisor starts its processes with.

Start and stop are recorded in the audit log with the config in force; expired subjects are purged first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from prometheus_client import CollectorRegistry

from streamproc.cli.common import err_console, out, run_config
from streamproc.config import PipelineConfig
from streamproc.errors import ConfigError
from streamproc.fsutil import sha256_file

RunRole = Literal["all", "embed", "workers"]


def run_command(
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
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Validate the config and the options, check that paths exist; start nothing."),
    ] = False,
) -> None:
    """Run the pipeline: decode, detect, track, embed best shots, search, publish match events.

    Stops by itself when every file source ends; SIGINT/SIGTERM drain what is in flight and stop. Every
    check that needs no model comes first: a refused run writes nothing."""
    from streamproc.cli.preflight import preflight
    from streamproc.records.audit import AuditLog
    from streamproc.stream.authorisation import NotAuthorisedError, check_authorisation

    if role not in ("all", "embed", "workers"):
        raise ConfigError(f"--role must be all, embed or workers, not {role!r}")
    if operator is not None and not operator.strip():
        raise ConfigError("--operator must name who starts the pipeline, not be empty")
    cfg = run_config(config, source, watchlist, events, metrics_port)
    preflight(cfg, role, probe=not dry_run)
    if dry_run:
        out.print(
            f"{config}: OK; would run {len(cfg.sources)} source(s) ({', '.join(s.id for s in cfg.sources)}) "
            f"against watchlist {cfg.watchlist.path}, events on {cfg.events.endpoint}; nothing started (--dry-run)",
            highlight=False,
        )
        return
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
            "fair_map": pipeline.threshold.fair_map is not None,
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


@dataclass
class StreamSummary:
    """Per-stream totals read back from the aggregated metrics."""

    frames: int = 0
    faces: int = 0
    tracks: int = 0
    embeddings: int = 0
    events: int = 0
    errors: int = 0


def summarise(registry: CollectorRegistry) -> dict[str, StreamSummary]:
    """Totals per stream from one registry (all child processes aggregated)."""
    fields = {
        "streamproc_frames_processed_total": "frames",
        "streamproc_faces_detected_total": "faces",
        "streamproc_tracks_started_total": "tracks",
        "streamproc_embeddings_total": "embeddings",
        "streamproc_events_published_total": "events",
        "streamproc_source_errors_total": "errors",
    }
    out: dict[str, StreamSummary] = {}
    for family in registry.collect():
        for sample in family.samples:
            field = fields.get(sample.name)
            stream = sample.labels.get("stream")
            if field is None or stream is None:
                continue
            summary = out.setdefault(stream, StreamSummary())
            setattr(summary, field, getattr(summary, field) + int(sample.value))
    return out


def run_supervised(cfg: PipelineConfig, role: Literal["all", "workers"]) -> tuple[int, dict[str, StreamSummary]]:
    """Supervisor + children until every stream ends or SIGINT/SIGTERM; (exit code, per-stream totals)."""
    from streamproc.metrics import serve
    from streamproc.runtime.supervisor import Supervisor

    runtime = Path(tempfile.mkdtemp(prefix="streamproc-run-"))
    server = None
    try:
        supervisor = Supervisor(cfg, runtime, roles=role)
        if cfg.metrics.port is not None:
            server = serve(
                supervisor.registry,
                cfg.metrics.host,
                cfg.metrics.port,
                healthy=supervisor.healthy,
                ready=supervisor.ready,
            )
            logging.getLogger(__name__).warning("metrics: %s (probes /healthz, /readyz)", server.url)

        def on_signal(_signum: int, _frame: object) -> None:
            supervisor.stop()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        code = supervisor.run()
        if supervisor.fatal:
            logging.getLogger(__name__).error("%s", supervisor.fatal)
        return code, summarise(supervisor.registry)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(runtime, ignore_errors=True)


def child_command(
    role: Annotated[str, typer.Argument(help="embed or worker")],
    config_json: Annotated[Path, typer.Option("--config-json", help="Effective configuration (JSON).")],
    shard: Annotated[int, typer.Option("--shard")] = 0,
    shards: Annotated[int, typer.Option("--shards")] = 1,
    ready_dir: Annotated[Path | None, typer.Option("--ready-dir")] = None,
) -> None:
    """Internal: one process of the multi-process layout, started by the supervisor."""
    from streamproc.runtime.roles import embed_main, worker_main

    logging.getLogger().setLevel(logging.INFO)
    cfg = PipelineConfig.model_validate_json(config_json.read_text(encoding="utf-8"))
    name = "embed" if role == "embed" else f"worker-{shard}"
    ready = ready_dir / f"{name}.{os.getpid()}" if ready_dir is not None else None
    if role == "embed":
        raise typer.Exit(embed_main(cfg, ready_file=ready))
    if role == "worker":
        raise typer.Exit(worker_main(cfg, shard, shards, ready_file=ready))
    raise typer.BadParameter(f"unknown role {role!r}")
