"""The two process roles of the multi-process layout (see docs/scaling.md).

- **worker**: owns a shard of the streams (``sources[shard::shards]``) and runs their front halves
  (decode → detect → track → best shot → align), sending best shots over ZeroMQ to ``scale.embed_endpoint``.
- **embed service**: binds ``scale.embed_endpoint``, batches the shots of every worker → embed → search →
  policy → event feed (journal, PUB, replay), audit of every flag.

Both stop on SIGTERM/SIGINT: a worker ends its tracks and delivers their last shots; the service drains what
is still arriving and publishes. Both touch ``ready_file`` once serving, for the supervisor's readiness probe.
Exit codes: 0 done, :data:`EXIT_STREAM_FAILED` when a stream's source failed (not a crash: a restart would
fail the same way), :data:`EXIT_FATAL` when the process cannot start (config, models, endpoint).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import zmq
from prometheus_client import CollectorRegistry

from streamproc.config import PipelineConfig
from streamproc.errors import StreamprocError
from streamproc.feed.event_feed import EventFeed
from streamproc.feed.security import Authenticator
from streamproc.metrics import PipelineMetrics, serve
from streamproc.records.audit import AuditLog
from streamproc.runtime.build import (
    build_detector,
    build_embedder,
    pipeline_detector_config,
    resolve_threshold,
)
from streamproc.runtime.embed_service import EmbedService
from streamproc.runtime.matcher import Matcher
from streamproc.runtime.pipeline import Housekeeping
from streamproc.runtime.selfcheck import check_embedder
from streamproc.runtime.summary import StreamReport, write_reports
from streamproc.runtime.transport import ZmqInbox, ZmqShotSink, chip_client_security, chip_server_security
from streamproc.search.watchlist_handle import WatchlistHandle
from streamproc.stream.front import StreamFront
from streamproc.vision.embed import embedder_spec

log = logging.getLogger(__name__)

EXIT_STREAM_FAILED = 3
EXIT_FATAL = 4


def shard_sources(config: PipelineConfig, shard: int, shards: int) -> PipelineConfig:
    """The config restricted to one worker's streams: every ``shards``-th source, starting at ``shard``."""
    return config.model_copy(update={"sources": config.sources[shard::shards]})


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def worker_main(
    config: PipelineConfig, shard: int, shards: int, ready_file: Path | None = None, report_file: Path | None = None
) -> int:
    """Run one worker's streams until they end (files) or a signal; see the module docstring for exit codes.

    ``report_file`` receives what the run's summary needs beyond the metrics (failures, files cut short)."""
    stop = threading.Event()
    _stop_on_signals(stop)
    mine = shard_sources(config, shard, shards)
    metrics = PipelineMetrics(CollectorRegistry())
    try:
        detector = build_detector(pipeline_detector_config(mine))
        template = embedder_spec(mine.embedder).template
        security = chip_client_security(config.scale)
    except StreamprocError as err:
        log.error("worker %d: %s", shard, err)
        return EXIT_FATAL
    context: zmq.SyncContext = zmq.Context()
    sinks = []
    fronts = []
    try:
        for source in mine.sources:
            metrics.init_stream(source.id, drop_reasons=("buffer_full",), queues=("decoded",))
            try:
                sink = ZmqShotSink(context, config.scale.embed_endpoint, config.scale.queue_hwm, stop, security)
            except StreamprocError as err:
                log.error("worker %d: %s", shard, err)
                return EXIT_FATAL
            sinks.append(sink)
            fronts.append(StreamFront(source, mine, detector, template, sink, metrics, stop))
        for front in fronts:
            front.start()
        if ready_file is not None:
            ready_file.touch()
        for front in fronts:
            while front.is_alive():
                front.join(timeout=0.5)
    finally:
        stop.set()
        for front in fronts:
            front.join()
        for sink in sinks:
            sink.close()  # lingers to deliver the last shots
        context.term()
    if report_file is not None:
        write_reports(report_file, {f.stream_id: StreamReport(f.stats.error, f.stats.cut_short) for f in fronts})
    failed = [f.stream_id for f in fronts if f.stats.error]
    return EXIT_STREAM_FAILED if failed else 0


def embed_main(
    config: PipelineConfig,
    ready_file: Path | None = None,
    registry: CollectorRegistry | None = None,
    serve_http: bool = False,
    actor: str = "pipeline",
) -> int:
    """Run the embed service until a signal; ``serve_http`` serves metrics and probes itself (standalone role)."""
    stop = threading.Event()
    _stop_on_signals(stop)
    registry = registry or CollectorRegistry()
    metrics = PipelineMetrics(registry)
    context: zmq.SyncContext = zmq.Context()
    try:
        embedder = build_embedder(config)
        check_embedder(build_detector(config), embedder)
        threshold = resolve_threshold(config, embedder)
        watchlist = WatchlistHandle(config.watchlist.path, embedder.identity, config.watchlist.reload_s)
    except StreamprocError as err:
        log.error("embed service: %s", err)
        context.term()
        return EXIT_FATAL
    audit = AuditLog.open_or_create(config.audit.dir or config.watchlist.path, config.audit.key, actor=actor)
    feed = inbox = server = authenticator = None
    try:
        security = chip_server_security(config.scale)
        if security is not None:
            authenticator = Authenticator(context, security.allowed_clients_dir)
        feed = EventFeed(config.events, metrics)
        inbox = ZmqInbox(
            context,
            config.scale.embed_endpoint,
            config.scale.queue_hwm,
            metrics.wire_errors.inc,
            security=security,
        )
        matcher = Matcher(config, embedder, watchlist, threshold, feed, metrics, audit)
        for source in config.sources:
            metrics.init_stream(source.id)
        service = EmbedService(
            inbox,
            matcher,
            max_batch=embedder.max_batch,
            max_wait_s=config.scale.embed_max_wait_ms / 1000,
            metrics=metrics,
            housekeeping=Housekeeping(feed, watchlist, matcher, metrics),
        )
        audit.append(
            actor,
            "embed_service_start",
            details={  # the threshold in force, on record at every (re)start
                "endpoint": inbox.endpoint,
                "threshold": threshold.distance,
                "threshold_source": threshold.source,
                "target_fmr": threshold.fmr_target,
                "uncalibrated": threshold.uncalibrated,
                "k_of_n": [config.policy.k, config.policy.n],
            },
        )
        if serve_http and config.metrics.port is not None:
            server = serve(registry, config.metrics.host, config.metrics.port, service.healthy, service.ready)
        if ready_file is not None:
            ready_file.touch()
        log.info("embed service on %s, events on %s", inbox.endpoint, feed.endpoint)
        service.run(stop)
    except StreamprocError as err:
        log.error("embed service: %s", err)
        return EXIT_FATAL
    finally:
        if server is not None:
            server.close()
        if inbox is not None:
            inbox.close()
        if feed is not None:
            feed.close()
        if authenticator is not None:
            authenticator.close()
        watchlist.close()
        context.term()
    return 0
