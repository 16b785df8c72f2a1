"""The single-process pipeline (``scale.workers: 0``): the same stages as the multi-process layout, on threads.

    decode thread (per stream) ─FrameBuffer(buffer_frames)─▶ front thread (per stream: detect, track, best shot,
    align) ─QueueChannel(bounded)─▶ embed thread (shared: dynamic batches → embed → search → policy → publish)

Only a face chosen as a track's best shot is embedded; embeddings of faces that match nothing are dropped on the
spot (counted, never stored or logged), and so are their chips. A flag becomes a ``MatchEvent``, published on
ZeroMQ as a candidate for human review. While the embed thread runs a batch, the fronts wait before their next
frame (:mod:`streamproc.runtime.turns`: decisions first on shared cores). :mod:`streamproc.runtime.supervisor` runs
the fronts in worker processes and the embed side as a service instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamproc.config import PipelineConfig
from streamproc.feed.event_feed import EventFeed
from streamproc.metrics import PipelineMetrics
from streamproc.protocols import FaceDetector
from streamproc.records.audit import AuditLog
from streamproc.runtime.embed_service import EmbedService, QueueChannel
from streamproc.runtime.matcher import Matcher
from streamproc.runtime.turns import EmbedTurns
from streamproc.search.calibration import Threshold
from streamproc.search.watchlist_handle import WatchlistHandle
from streamproc.stream.front import StreamFront
from streamproc.types import Frame
from streamproc.vision.embed import OnnxEmbedder

JOURNAL_PRUNE_EVERY_S = 300.0
CHANNEL_SIZE = 1024
"""Best shots in flight between the stream threads and the embed thread."""


@dataclass
class StreamStats:
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    embeddings: int = 0
    flags: int = 0
    events: int = 0
    error: str | None = None


class Housekeeping:
    """What the embed side does every half second besides matching: gauges, journal retention, reviews."""

    def __init__(self, feed: EventFeed, watchlist: WatchlistHandle, matcher: Matcher, metrics: PipelineMetrics) -> None:
        self._feed = feed
        self._matcher = matcher
        self._watchlist = watchlist
        self._metrics = metrics
        self._last_prune = time.monotonic()

    def __call__(self) -> None:
        subjects = len(self._watchlist.get())
        self._metrics.watchlist_subjects.set(subjects)
        self._matcher.update_predictions(subjects)
        self._feed.publish_pending_reviews()  # decisions made with `streamproc review decide` meanwhile
        if time.monotonic() - self._last_prune > JOURNAL_PRUNE_EVERY_S:
            self._feed.prune()
            self._last_prune = time.monotonic()


class Pipeline:
    """Builds the shared stages once and runs one :class:`StreamFront` per configured stream."""

    def __init__(
        self,
        config: PipelineConfig,
        detector: FaceDetector,
        embedder: OnnxEmbedder,
        watchlist: WatchlistHandle,
        threshold: Threshold,
        feed: EventFeed,
        metrics: PipelineMetrics,
        on_frame: Callable[[str, Frame], None] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.metrics = metrics
        self.threshold = threshold
        self._stop = threading.Event()
        self._watchlist = watchlist
        self._feed = feed
        self._channel = QueueChannel(CHANNEL_SIZE)
        self._matcher = Matcher(config, embedder, watchlist, threshold, feed, metrics, audit)
        turns = EmbedTurns(config.scale.embed_first_ms / 1000)
        self._service = EmbedService(
            self._channel,
            self._matcher,
            max_batch=embedder.max_batch,
            max_wait_s=config.scale.embed_max_wait_ms / 1000,
            metrics=metrics,
            housekeeping=Housekeeping(feed, watchlist, self._matcher, metrics),
            turns=turns,
        )
        for source in config.sources:
            metrics.init_stream(source.id, drop_reasons=("buffer_full",), queues=("decoded",))
        self.fronts = [
            StreamFront(
                source, config, detector, embedder.chip_template, self._channel, metrics, self._stop, on_frame, turns
            )
            for source in config.sources
        ]
        metrics.watchlist_subjects.set(len(watchlist.get()))

    @property
    def publisher_endpoint(self) -> str:
        return self._feed.endpoint

    @property
    def replay_endpoint(self) -> str | None:
        return self._feed.replay_endpoint

    def healthy(self) -> tuple[bool, dict[str, object]]:
        """Liveness for /healthz: the embed loop turns (streams that ended or failed are reported, not fatal)."""
        ok, details = self._service.healthy()
        failed = {f.stream_id: f.stats.error for f in self.fronts if f.stats.error}
        return ok, {**details, "failed_streams": failed}

    def ready(self) -> tuple[bool, dict[str, object]]:
        """Readiness for /readyz: the embed loop runs and the pipeline is not stopping."""
        ok, details = self._service.ready()
        return ok and not self._stop.is_set(), details

    def stop(self) -> None:
        """Ask every stream to stop; each drains what it has and publishes pending flags."""
        self._stop.set()

    def close(self) -> None:
        """Release the event feed (sockets, journal) and the watchlist (after :meth:`run`)."""
        self._feed.close()
        self._watchlist.close()

    def _embed_main(self, failure: list[BaseException]) -> None:
        """The embed thread; if it fails, stop the streams and keep draining so no front blocks on a full queue."""
        try:
            self._service.run(self._stop)
        except BaseException as err:  # noqa: BLE001 - re-raised by run() on the main thread
            failure.append(err)
            self._stop.set()
            while not self._channel.finished(stopping=True):
                self._channel.get(0.1)

    def run(self) -> dict[str, StreamStats]:
        """Run until every stream ends (files) or :meth:`stop` is called; returns per-stream stats."""
        failure: list[BaseException] = []
        embed_thread = threading.Thread(target=self._embed_main, args=(failure,), name="embed", daemon=True)
        embed_thread.start()
        for front in self.fronts:
            front.start()
        try:
            for front in self.fronts:
                while front.is_alive():
                    front.join(timeout=0.5)
        finally:
            self._stop.set()
            for front in self.fronts:
                front.join()
            self._channel.close()  # the embed thread drains every shot already sent, then ends
            embed_thread.join()
        if failure:
            raise failure[0]
        matched = self._matcher.stats
        stats: dict[str, StreamStats] = {}
        for front in self.fronts:
            f, b = front.stats, matched.get(front.stream_id)
            stats[front.stream_id] = StreamStats(
                frames=f.frames,
                faces=f.faces,
                tracks=f.tracks,
                embeddings=b.embeddings if b else 0,
                flags=b.flags if b else 0,
                events=b.events if b else 0,
                error=f.error,
            )
        return stats
