"""`streamproc run` in the multi-process layout (``scale.workers >= 1`` or ``--role``), and the hidden
`streamproc child` command the supervisor starts its processes with."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer
from prometheus_client import CollectorRegistry

from streamproc.config import PipelineConfig

RunRole = Literal["all", "embed", "workers"]


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
