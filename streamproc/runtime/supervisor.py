"""The supervisor of the multi-process layout: starts the embed service and N stream workers as child processes,
restarts any that die (exponential backoff), serves one metrics endpoint for all of them plus health and
readiness probes, and drains everything on SIGTERM.

Children run ``python -m streamproc child ...`` in their own session (a terminal's Ctrl-C reaches only the
supervisor, which stops workers first and the embed service last, so no shot in flight is lost). The effective
configuration is handed over as a JSON file, never pickled. Metrics: children write prometheus_client's
multiprocess files into a private directory; the supervisor aggregates them (counters of a dead child are kept,
its gauges dropped).

A worker that exits 0 or :data:`~streamproc.runtime.roles.EXIT_STREAM_FAILED` has finished its streams (files ended, or
a source failed in a way a restart would repeat); any other exit (a crash, ``kill -9``) is restarted, and its
streams start again: a file from its beginning (events already published come out under the same ids and the
journal drops them), a live source from now.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess

from streamproc.config import PipelineConfig
from streamproc.runtime.roles import EXIT_FATAL, EXIT_STREAM_FAILED

log = logging.getLogger(__name__)

Role = Literal["embed", "worker"]
STABLE_AFTER_S = 60.0
"""A child that ran this long before dying restarts after the initial backoff again."""
DRAIN_TIMEOUT_S = 60.0
"""After this long draining, children still running are killed."""


@dataclass
class _Child:
    role: Role
    shard: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    failures_in_row: int = 0
    restarts: int = 0
    done: bool = False
    stop_requested: bool = False
    last_rc: int | None = None

    @property
    def name(self) -> str:
        return "embed" if self.role == "embed" else f"worker-{self.shard}"


class Supervisor:
    """Runs the children of one pipeline; see the module docstring."""

    def __init__(
        self,
        config: PipelineConfig,
        runtime_dir: Path,
        roles: Literal["all", "workers"] = "all",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._config = config
        self._dir = runtime_dir
        self._metrics_dir = runtime_dir / "metrics"
        self._ready_dir = runtime_dir / "ready"
        self.report_dir = runtime_dir / "reports"
        """Each stream worker's end-of-run report (:mod:`streamproc.runtime.summary`)."""
        self._metrics_dir.mkdir(parents=True, exist_ok=True)
        self._ready_dir.mkdir(parents=True, exist_ok=True)
        self._config_file = runtime_dir / "config.json"
        fd = os.open(self._config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(config.model_dump_json())
        self.shards = max(1, min(config.scale.workers, len(config.sources)))
        self._children = [_Child("worker", i) for i in range(self.shards)]
        if roles == "all":
            self._children.insert(0, _Child("embed", 0))
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self.fatal: str | None = None
        self.registry = registry or CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=str(self._metrics_dir))  # type: ignore[no-untyped-call]
        self._restarts = Counter(
            "streamproc_process_restarts_total",
            "Child processes restarted after dying (crash, kill).",
            ("role",),
            registry=self.registry,
        )
        self._up = Gauge(
            "streamproc_process_up", "1 while a child process runs.", ("role", "shard"), registry=self.registry
        )
        for child in self._children:
            self._restarts.labels(role=child.role)
            self._up.labels(role=child.role, shard=str(child.shard))

    @property
    def metrics_dir(self) -> Path:
        return self._metrics_dir

    def pids(self, role: Role) -> list[int]:
        """Running children of ``role`` (tests kill them)."""
        return [c.proc.pid for c in self._children if c.role == role and c.proc is not None and c.proc.poll() is None]

    def stop(self) -> None:
        """Drain and stop (signal-safe: only sets a flag)."""
        self._stop.set()

    # ------------------------------------------------------------------------------------------ probes
    def healthy(self) -> tuple[bool, dict[str, object]]:
        """Alive while the supervision loop turns (a hung supervisor should be restarted by the orchestrator)."""
        age = time.monotonic() - self._heartbeat
        return age < 10.0, {"loop_age_s": round(age, 3), "children": self._child_report()}

    def ready(self) -> tuple[bool, dict[str, object]]:
        """Ready when every child that should run is running and has reported ready."""
        waiting = [c.name for c in self._children if not c.done and not self._is_ready(c)]
        return not waiting and not self._stop.is_set(), {"waiting_for": waiting}

    def _is_ready(self, child: _Child) -> bool:
        return child.proc is not None and child.proc.poll() is None and self._ready_file(child).exists()

    def _ready_file(self, child: _Child) -> Path:
        pid = child.proc.pid if child.proc is not None else 0
        return self._ready_dir / f"{child.name}.{pid}"

    def _child_report(self) -> dict[str, object]:
        return {
            c.name: {
                "pid": c.proc.pid if c.proc is not None and c.proc.poll() is None else None,
                "restarts": c.restarts,
                "done": c.done,
                "last_exit": c.last_rc,
            }
            for c in self._children
        }

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> int:
        """Supervise until every stream has ended (or :meth:`stop`); returns the process exit code."""
        draining_since: float | None = None
        embed_stopping = False
        try:
            while True:
                now = time.monotonic()
                self._heartbeat = now
                if self._stop.is_set() and draining_since is None:
                    draining_since = now
                    log.warning("draining: stopping workers, then the embed service")
                    self._signal("worker", signal.SIGTERM)
                for child in self._children:
                    self._reap(child, draining=draining_since is not None)
                    if self.fatal is not None:
                        self._stop.set()
                    if child.proc is None and not child.done and draining_since is None and now >= child.next_start:
                        self._start(child)
                workers = [c for c in self._children if c.role == "worker"]
                if all(w.done or (draining_since is not None and w.proc is None) for w in workers):
                    embed = [c for c in self._children if c.role == "embed"]
                    if not embed or all(c.done or c.proc is None for c in embed):
                        break
                    if not embed_stopping:
                        embed_stopping = True
                        self._signal("embed", signal.SIGTERM)
                if draining_since is not None and now - draining_since > DRAIN_TIMEOUT_S:
                    log.error("drain took over %.0f s: killing what is left", DRAIN_TIMEOUT_S)
                    self._signal("worker", signal.SIGKILL)
                    self._signal("embed", signal.SIGKILL)
                time.sleep(0.1)
        finally:
            for child in self._children:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()
                    _mark_dead(child.proc.pid, self._metrics_dir)
        if self.fatal is not None:
            return 1
        failed = any(c.last_rc == EXIT_STREAM_FAILED for c in self._children)
        return 1 if failed else 0

    def _start(self, child: _Child) -> None:
        argv = [
            sys.executable,
            "-m",
            "streamproc",
            "child",
            child.role,
            "--config-json",
            str(self._config_file),
            "--shard",
            str(child.shard),
            "--shards",
            str(self.shards),
            "--ready-dir",
            str(self._ready_dir),
            "--report-dir",
            str(self.report_dir),
        ]
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir)}
        child.proc = subprocess.Popen(argv, env=env, start_new_session=True)
        child.stop_requested = False
        child.started_at = time.monotonic()
        self._up.labels(role=child.role, shard=str(child.shard)).set(1)
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def _reap(self, child: _Child, draining: bool) -> None:
        if child.proc is None:
            return
        rc = child.proc.poll()
        if rc is None:
            return
        _mark_dead(child.proc.pid, self._metrics_dir)
        self._ready_file(child).unlink(missing_ok=True)
        self._up.labels(role=child.role, shard=str(child.shard)).set(0)
        child.proc, child.last_rc = None, rc
        if rc == EXIT_FATAL:
            self.fatal = f"{child.name} could not start (see its error above)"
            child.done = True
            return
        # Done: it was asked to stop, or a worker's streams ended. Anything else is a crash (the embed service
        # never ends by itself).
        if draining or child.stop_requested or (child.role == "worker" and rc in (0, EXIT_STREAM_FAILED)):
            child.done = True
            return
        ran = time.monotonic() - child.started_at
        child.failures_in_row = 1 if ran >= STABLE_AFTER_S else child.failures_in_row + 1
        scale = self._config.scale
        delay = min(scale.restart_max_s, scale.restart_initial_s * 2 ** (child.failures_in_row - 1))
        child.next_start = time.monotonic() + delay
        child.restarts += 1
        self._restarts.labels(role=child.role).inc()
        log.error("%s exited with %s after %.1f s: restarting in %.1f s", child.name, _describe(rc), ran, delay)

    def _signal(self, role: Role, signum: signal.Signals) -> None:
        for child in self._children:
            if child.role == role and child.proc is not None and child.proc.poll() is None:
                child.stop_requested = True
                child.proc.send_signal(signum)


def _mark_dead(pid: int, metrics_dir: Path) -> None:
    """Drop a dead child's live gauges from the aggregate (its counters stay: totals survive restarts)."""
    multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]


def _describe(rc: int) -> str:
    if rc < 0:
        return f"signal {signal.Signals(-rc).name}"
    return f"code {rc}"
