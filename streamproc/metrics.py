"""Prometheus metrics of the pipeline, and the HTTP endpoint that serves them.

Every constructor takes the registry it registers into, never prometheus_client's global default, so each
pipeline (and each test) owns its metrics. Labels are the stream and, where it matters, the stage, queue or
drop reason, all from small fixed sets. Nothing is ever labelled by subject or person: a metric must not
become a record of who was seen where, and per-person labels would also grow without bound.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Final, Self
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamproc.errors import StreamprocError

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
            return Gauge(f"streamproc_{name}", doc, labels, registry=registry)

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
        self.source_errors = counter("source_errors", "Failures to open or decode a stream's source.")
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
        self.embed_batch_size = Histogram(
            "streamproc_embed_batch_size",
            "Face chips per embedder call (micro-batching efficiency).",
            registry=registry,
            buckets=BATCH_BUCKETS,
        )

        self.queue_depth = gauge("queue_depth", "Items waiting in a bounded queue.", ("stream", "queue"))
        self.watchlist_subjects = Gauge(
            "streamproc_watchlist_subjects", "Active subjects in the loaded watchlist.", registry=registry
        )
        self.journal_bytes = Gauge(
            "streamproc_journal_bytes", "Size of the durable event journal on disk.", registry=registry
        )
        self.replay_requests = Counter(
            "streamproc_replay_requests_total", "Replay requests served from the event journal.", registry=registry
        )
        self.tracks_live = gauge("tracks_live", "Face tracks currently alive.")
        self.source_up = gauge("source_up", "1 while the stream's source is open and delivering, else 0.")

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
            self.source_errors,
            self.comparisons_nonmatching,
        ):
            c.labels(stream=stream)
        for reason in drop_reasons:
            self.frames_dropped.labels(stream=stream, reason=reason)
        for stage in STAGES:
            self.stage_seconds.labels(stream=stream, stage=stage)
        self.end_to_end_seconds.labels(stream=stream)
        for queue in queues:
            self.queue_depth.labels(stream=stream, queue=queue)
        self.tracks_live.labels(stream=stream)
        self.source_up.labels(stream=stream)


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


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread (port 0: any free port)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        reason = err.strerror or str(err)
        raise StreamprocError(
            f"cannot serve metrics on {host}:{port}: {reason} (set metrics.port to a free port, 0 for any, "
            "or null to turn the endpoint off)"
        ) from None
    return MetricsServer(server, thread)


__all__ = [
    "BATCH_BUCKETS",
    "END_TO_END_BUCKETS",
    "STAGES",
    "STAGE_BUCKETS",
    "MetricsServer",
    "PipelineMetrics",
    "serve",
]
