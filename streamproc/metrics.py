"""Prometheus metrics of the pipeline, and the HTTP endpoint that serves them.

Every constructor takes the registry it registers into, never prometheus_client's global default, so each
pipeline (and each test) owns its metrics. Labels are the stream and, where it matters, the stage, queue or
drop reason, all from small fixed sets. Nothing is ever labelled by subject or person: a metric must not
become a record of who was seen where, and per-person labels would also grow without bound.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streamproc.errors import StreamprocError
from streamproc.types import SOURCE_STATES

STAGES: Final = ("decode", "detect", "track", "align", "embed", "search", "policy", "publish")
"""Values of the ``stage`` label of ``streamproc_stage_seconds``."""

STAGE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
END_TO_END_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


class PipelineMetrics:
    """Every metric the pipeline exports, registered in ``registry``.

    Use ``metric.labels(stream=..., ...)`` from the stage that owns the event; prometheus_client's metrics
    are thread-safe, so stream threads share one instance.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("stream",)) -> Counter:
            return Counter(f"streamproc_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("stream",)) -> Gauge:
            # Multi-process layout: each stream lives in one process, so summing over live processes is exact.
            return Gauge(f"streamproc_{name}", doc, labels, registry=registry, multiprocess_mode="livesum")

        self.frames_decoded = counter("frames_decoded", "Frames decoded (after max_fps sampling).")
        self.frames_processed = counter("frames_processed", "Frames that went through detection and tracking.")
        self.frames_dropped = counter(
            "frames_dropped", "Frames decoded but never processed, by reason (e.g. buffer_full).", ("stream", "reason")
        )
        self.faces_detected = counter("faces_detected", "Face detections, before tracking and quality gates.")
        self.tracks_started = counter("tracks_started", "Face tracks started.")
        self.embeddings = counter("embeddings", "Best shots embedded (never every frame).")
        self.matches = counter("matches", "Flags raised by the k-of-n match policy (candidates for review).")
        self.events_published = counter("events_published", "Match events handed to the event publisher.")
        self.events_resent = counter(
            "events_resent",
            "Match events already in the journal from an earlier run or a restart: not sent again.",
        )
        self.source_errors = counter("source_errors", "Failures to open or decode a stream's source.")
        self.shots_sent = counter("shots_sent", "Best shots a stream sent to the embed service.")
        self.shots_dropped = counter(
            "shots_dropped",
            "Messages (best shots, track ends) a live stream dropped because the embed service's queue was full.",
            ("stream", "reason"),
        )
        self.wire_errors = Counter(
            "streamproc_wire_errors_total", "Malformed messages the embed service dropped.", registry=registry
        )
        self.comparisons_nonmatching = counter(
            "comparisons_nonmatching",
            "Embedded shots whose best candidate was above the threshold: counted, never logged or kept.",
        )

        self.stage_seconds = Histogram(
            "streamproc_stage_seconds",
            "Time spent in each pipeline stage, per call (embed: submit to result, including batching wait).",
            ("stream", "stage"),
            registry=registry,
            buckets=STAGE_BUCKETS,
        )
        self.end_to_end_seconds = Histogram(
            "streamproc_end_to_end_seconds",
            "From decoding the best shot's frame to publishing its match event (wall clock).",
            ("stream",),
            registry=registry,
            buckets=END_TO_END_BUCKETS,
        )
        self.decision_seconds = Histogram(
            "streamproc_decision_seconds",
            "From the frame that completed a flag's evidence (its best-shot window closed, or its track ended) "
            "to publishing the event: end-to-end minus the best-shot wait, i.e. what processing adds.",
            ("stream",),
            registry=registry,
            buckets=END_TO_END_BUCKETS,
        )
        self.embed_batch_size = Histogram(
            "streamproc_embed_batch_size",
            "Face chips per embedder call (micro-batching efficiency).",
            registry=registry,
            buckets=BATCH_BUCKETS,
        )

        self.embed_batch_seconds = Histogram(
            "streamproc_embed_batch_seconds",
            "Embedder time per batch (one network call for the chips of many streams).",
            registry=registry,
            buckets=STAGE_BUCKETS,
        )
        self.queue_depth = gauge("queue_depth", "Items waiting in a bounded queue.", ("stream", "queue"))
        self.embed_queue_depth = Gauge(
            "streamproc_embed_queue_depth",
            "Messages waiting for the embed service (single-process layout; ZeroMQ queues are bounded by HWM).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.watchlist_subjects = Gauge(
            "streamproc_watchlist_subjects",
            "Active subjects in the loaded watchlist.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.journal_bytes = Gauge(
            "streamproc_journal_bytes",
            "Size of the durable event journal on disk.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.replay_requests = Counter(
            "streamproc_replay_requests_total", "Replay requests served from the event journal.", registry=registry
        )
        self.tracks_live = gauge("tracks_live", "Face tracks currently alive.")
        self.detect_interval = gauge(
            "detect_interval", "Detection schedule: frames between two whole-frame detection passes (1 = every frame)."
        )
        self.detect_native_cycle = gauge(
            "detect_native_cycle_seconds",
            "Detection schedule: time for the native-size tiles to cover the whole frame once (0: no tiles, the "
            "whole-frame pass alone shows every face the quality gate could pass).",
        )
        self.detect_scale = gauge(
            "detect_scale", "Detection schedule: effective resolution of the whole-frame pass (1 = native size)."
        )
        self.embed_turn_wait = counter(
            "embed_turn_wait_seconds",
            "Seconds the stream waited before a frame while the in-process embedder ran a batch "
            "(scale.embed_first_ms).",
        )
        self.source_up = gauge("source_up", "1 while the stream's source is open and delivering, else 0.")
        self.source_reconnects = counter("source_reconnects", "Attempts to reopen a live source after it dropped.")
        self.source_state = gauge(
            "source_state",
            "1 for the state the stream's source is in (connecting, streaming, reconnecting, ...), 0 for the others.",
            ("stream", "state"),
        )
        self.predicted_false_alerts = gauge(
            "predicted_false_alerts_per_hour",
            "Expected false candidates per hour: recent tracks/s x the calibration's measured per-track "
            "false-flag rate at the current gallery size (k-of-n included). NaN when not calibrated for it.",
        )

    def init_stream(self, stream: str, drop_reasons: tuple[str, ...] = (), queues: tuple[str, ...] = ()) -> None:
        """Create a stream's series at zero, so dashboards and rate() see it before its first event."""
        for c in (
            self.frames_decoded,
            self.frames_processed,
            self.faces_detected,
            self.tracks_started,
            self.embeddings,
            self.matches,
            self.events_published,
            self.events_resent,
            self.shots_sent,
            self.source_errors,
            self.source_reconnects,
            self.comparisons_nonmatching,
        ):
            c.labels(stream=stream)
        for reason in drop_reasons:
            self.frames_dropped.labels(stream=stream, reason=reason)
        self.shots_dropped.labels(stream=stream, reason="embed_queue_full")
        for stage in STAGES:
            self.stage_seconds.labels(stream=stream, stage=stage)
        self.end_to_end_seconds.labels(stream=stream)
        self.decision_seconds.labels(stream=stream)
        for queue in queues:
            self.queue_depth.labels(stream=stream, queue=queue)
        self.tracks_live.labels(stream=stream)
        self.source_up.labels(stream=stream)
        self.predicted_false_alerts.labels(stream=stream)
        for state in SOURCE_STATES:
            self.source_state.labels(stream=stream, state=state)


class StreamSeries:
    """The series a stream's front half touches on every frame, looked up once: prometheus_client's
    ``labels()`` costs ~2 us a call (a dict lookup behind a lock, with label checks), and a frame touched ten."""

    def __init__(self, metrics: PipelineMetrics, stream: str) -> None:
        self.detect_seconds = metrics.stage_seconds.labels(stream=stream, stage="detect")
        self.track_seconds = metrics.stage_seconds.labels(stream=stream, stage="track")
        self.align_seconds = metrics.stage_seconds.labels(stream=stream, stage="align")
        self.faces_detected = metrics.faces_detected.labels(stream=stream)
        self.tracks_started = metrics.tracks_started.labels(stream=stream)
        self.tracks_live = metrics.tracks_live.labels(stream=stream)
        self.frames_processed = metrics.frames_processed.labels(stream=stream)
        self.detect_interval = metrics.detect_interval.labels(stream=stream)
        self.detect_native_cycle = metrics.detect_native_cycle.labels(stream=stream)
        self.detect_scale = metrics.detect_scale.labels(stream=stream)
        self.embed_turn_wait = metrics.embed_turn_wait.labels(stream=stream)


class MetricsServer:
    """A running metrics endpoint; ``port`` is the port actually bound (useful when 0 was asked)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        self.host: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


HealthCheck = Callable[[], tuple[bool, dict[str, object]]]
"""Returns (ok, details): details are served as JSON so an operator can see what is not ready."""


def _always_ok() -> tuple[bool, dict[str, object]]:
    return True, {}


def serve(
    registry: CollectorRegistry,
    host: str,
    port: int,
    healthy: HealthCheck = _always_ok,
    ready: HealthCheck = _always_ok,
) -> MetricsServer:
    """Serve ``/metrics`` (``registry``), ``/healthz`` (liveness) and ``/readyz`` (readiness) from a daemon thread.

    The probes answer 200 or 503 with a JSON body; orchestrators restart on a failing liveness probe and
    route no work while readiness fails. Port 0 binds any free port.
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok, details = (healthy if path == "/healthz" else ready)()
            body = json.dumps({"ok": ok, **details}, sort_keys=True, default=str).encode()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        result: list[bytes] = metrics_app(environ, start_response)
        return result

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(host, port, app, Server, handler_class=_QuietHandler)
    except OSError as err:
        reason = err.strerror or str(err)
        raise StreamprocError(
            f"cannot serve metrics on {host}:{port}: {reason} (set metrics.port to a free port, 0 for any, "
            "or null to turn the endpoint off)"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        return


__all__ = [
    "BATCH_BUCKETS",
    "END_TO_END_BUCKETS",
    "STAGES",
    "STAGE_BUCKETS",
    "HealthCheck",
    "MetricsServer",
    "PipelineMetrics",
    "StreamSeries",
    "serve",
]
