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
from streamproc.cli.progress import DEFAULT_EVERY_S, RunProgress
from streamproc.config import PipelineConfig
from streamproc.errors import ConfigError
from streamproc.fsutil import sha256_file
from streamproc.runtime.summary import RunSummary, StreamReport, read_reports, render, summarise

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
    progress_every: Annotated[
        float,
        typer.Option(
            "--progress-every",
            min=1.0,
            help="Seconds between two progress lines when stderr is not a terminal (a log, a pipe, a service).",
        ),
    ] = DEFAULT_EVERY_S,
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
    check that needs no model comes first: a refused run writes nothing. Exit status: 0 done, 1 a stream
    failed, 2 a usage or config mistake, 3 a live source never connected."""
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
    progress = _ProgressSettings(enabled=not quiet, every_s=progress_every)
    if role == "workers" or cfg.scale.workers >= 1:
        _run_supervised(cfg, "workers" if role == "workers" else "all", audit, actor, start_details, progress)
        return
    _run_single_process(cfg, audit, actor, start_details, progress)


@dataclass(frozen=True)
class _ProgressSettings:
    enabled: bool
    every_s: float

    def display(self, registry: CollectorRegistry, cfg: PipelineConfig) -> RunProgress:
        return RunProgress(registry, cfg.sources, err_console, enabled=self.enabled, every_s=self.every_s)


def _run_supervised(
    cfg: PipelineConfig,
    role: Literal["all", "workers"],
    audit: Any,
    actor: str,
    start_details: dict[str, Any],
    progress: _ProgressSettings,
) -> None:
    audit.append(actor, "pipeline_start", details=start_details)
    code: int = 1
    summary = RunSummary()
    try:
        code, summary = run_supervised(cfg, role, progress)
    finally:
        audit.append(actor, "pipeline_stop", details=_stop_details(summary))
    _finish(summary, code)


def _run_single_process(
    cfg: PipelineConfig, audit: Any, actor: str, start_details: dict[str, Any], progress: _ProgressSettings
) -> None:
    from streamproc.metrics import serve
    from streamproc.runtime.build import build_pipeline

    registry = CollectorRegistry()
    display = progress.display(registry, cfg)
    pipeline = build_pipeline(cfg, registry, audit=audit)
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
    summary = RunSummary()
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
        with display:
            pipeline.run()
        reports = {f.stream_id: StreamReport(f.stats.error, f.stats.cut_short) for f in pipeline.fronts}
        summary = summarise(registry, cfg.sources, reports)
    finally:
        pipeline.close()
        if server is not None:
            server.close()
        audit.append(actor, "pipeline_stop", details=_stop_details(summary))
    _finish(summary, 0)


def _stop_details(summary: RunSummary) -> dict[str, Any]:
    """The audit record's counts per stream; comparisons that matched nothing are never logged one by one."""
    return {
        s.stream: {"frames": s.frames, "faces": s.faces, "embeddings": s.embeddings, "events": s.events}
        for s in summary.streams
    }


def _finish(summary: RunSummary, code: int) -> None:
    """Print the summary (the same lines in every layout) and exit with its status, or ``code`` if worse."""
    for line in render(summary):
        out.print(line, highlight=False, markup=False)
    status = summary.exit_code or code
    if status:
        raise typer.Exit(status)


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


def run_supervised(
    cfg: PipelineConfig, role: Literal["all", "workers"], progress: _ProgressSettings
) -> tuple[int, RunSummary]:
    """Supervisor + children until every stream ends or SIGINT/SIGTERM; (supervisor's exit code, summary).

    The code is 1 when a process could not start or a stream failed (the summary says which and why)."""
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
            err_console.print(f"metrics: {server.url} (probes /healthz, /readyz)", highlight=False)

        def on_signal(_signum: int, _frame: object) -> None:
            supervisor.stop()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        with progress.display(supervisor.registry, cfg):
            code = supervisor.run()
        if supervisor.fatal:
            logging.getLogger(__name__).error("%s", supervisor.fatal)
            return code, RunSummary()
        return code, summarise(supervisor.registry, cfg.sources, read_reports(supervisor.report_dir))
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
    report_dir: Annotated[Path | None, typer.Option("--report-dir")] = None,
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
        report = report_dir / f"{name}.json" if report_dir is not None else None
        raise typer.Exit(worker_main(cfg, shard, shards, ready_file=ready, report_file=report))
    raise typer.BadParameter(f"unknown role {role!r}")
