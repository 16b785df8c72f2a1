"""The single-process pipeline: per stream, decode → detect → track → best shot; shared batched embedding;
per stream, search → match policy → event.

Threads and queues (every queue bounded):

    decode thread (per stream) ─FrameBuffer(buffer_frames, wait|drop_oldest)─▶ stream thread (per stream)
    stream thread ─MicroBatcher(max_batch, max_wait)─▶ embed thread (shared) ─future─▶ stream thread

Only a face chosen as a track's best shot is embedded; embeddings of faces that match nothing are dropped
on the spot (counted, never stored or logged), and so are their chips. A flag becomes a ``MatchEvent``,
published on ZeroMQ as a candidate for human review.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.align import align
from streamproc.audit import AuditLog
from streamproc.batcher import BatchPolicy, MicroBatcher
from streamproc.bestshot import BestShotSelector, Shot
from streamproc.buffer import BufferClosed, FrameBuffer
from streamproc.calibration import Threshold
from streamproc.config import PipelineConfig, SourceConfig
from streamproc.embed import OnnxEmbedder
from streamproc.errors import StreamprocError
from streamproc.events import CalibrationInfo, MatchEvent, QualityInfo, make_event_id
from streamproc.feed import EventFeed
from streamproc.metrics import PipelineMetrics
from streamproc.policy import Flag, MatchPolicy, ShotResult
from streamproc.protocols import FaceDetector
from streamproc.quality import QualityGate
from streamproc.source import SourceReader, VideoSource
from streamproc.track import FaceTracker
from streamproc.types import Detections, EmbedderIdentity, Frame, Quality
from streamproc.watchlist import Watchlist

log = logging.getLogger(__name__)

EMBED_MAX_WAIT_S = 0.010
JOURNAL_PRUNE_EVERY_S = 300.0


@dataclass(frozen=True)
class ShotPayload:
    """What a best shot carries until it is embedded: the aligned chip and where it came from."""

    chip: NDArray[np.uint8] = field(repr=False)  # (S, S, 3) uint8 RGB
    box: tuple[float, float, float, float]
    frame_pts_s: float
    captured_at: float
    timings_ms: dict[str, float]


@dataclass
class StreamStats:
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    embeddings: int = 0
    flags: int = 0
    events: int = 0
    error: str | None = None


class WatchlistHandle:
    """The current read-only watchlist, reopened when another process changes it (hot reload)."""

    def __init__(self, path: Path, embedder_identity: EmbedderIdentity, reload_s: float) -> None:
        self._path = path
        self._identity = embedder_identity
        self._reload_s = reload_s
        self._lock = threading.Lock()
        self._current = Watchlist.open(path, embedder_identity)
        self._version = self._current.index_version()
        self._checked = time.monotonic()

    def get(self) -> Watchlist:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._reload_s:
                self._checked = now
                version = self._current.index_version()
                if version != self._version:
                    fresh = Watchlist.open(self._path, self._identity)
                    old, self._current, self._version = self._current, fresh, fresh.index_version()
                    old.close()
                    log.info("watchlist %s reloaded (%d subjects)", self._path, len(fresh))
            return self._current

    def close(self) -> None:
        with self._lock:
            self._current.close()


class StreamWorker:
    """One stream's thread: decode buffer → detect → track → best shot → embed → search → policy → event."""

    def __init__(
        self,
        source: SourceConfig,
        config: PipelineConfig,
        detector: FaceDetector,
        embedder: OnnxEmbedder,
        batcher: MicroBatcher[NDArray[np.uint8], NDArray[np.float32]],
        watchlist: WatchlistHandle,
        threshold: Threshold,
        publisher: EventFeed,
        metrics: PipelineMetrics,
        stop: threading.Event,
        on_frame: Callable[[str, Frame], None] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.source_config = source
        self._audit = audit
        self.stream_id = source.id
        self._config = config
        self._detector = detector
        self._embedder = embedder
        self._batcher = batcher
        self._watchlist = watchlist
        self._threshold = threshold
        self._publisher = publisher
        self._metrics = metrics
        self._stop = stop
        self._on_frame = on_frame
        self._gate = QualityGate(config.quality)
        self._tracker = FaceTracker(config.tracker)
        self._shots: BestShotSelector[ShotPayload] = BestShotSelector(config.best_shot)
        self._policy = MatchPolicy(config.policy, threshold.distance)
        self._pending: deque[tuple[Shot[ShotPayload], Future[NDArray[np.float32]], float]] = deque()
        self._ended: set[int] = set()
        self.stats = StreamStats()
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.stream_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ loop
    def _run(self) -> None:
        labels = {"stream": self.stream_id}
        m = self._metrics
        try:
            video = VideoSource(
                self.source_config, on_error=lambda msg: m.source_errors.labels(stream=self.stream_id).inc()
            )
        except StreamprocError as err:
            self._fail(err)
            return
        buffer: FrameBuffer[Frame] = FrameBuffer(
            self.source_config.buffer_frames,
            video.buffer_policy,
            on_drop=lambda n: m.frames_dropped.labels(stream=self.stream_id, reason="buffer_full").inc(n),
        )
        reader = SourceReader(video, buffer, on_frame=lambda f: m.frames_decoded.labels(**labels).inc())
        reader.start()
        m.source_up.labels(**labels).set(1)
        error: StreamprocError | None = None
        try:
            while not self._stop.is_set():
                batch, ended, error = self._next_batch(buffer)
                m.queue_depth.labels(stream=self.stream_id, queue="decoded").set(buffer.depth)
                if batch:
                    self._process(batch)
                if ended:
                    break
            self._finish()  # also after a source error: what was seen is still judged
        finally:
            reader.stop()
            reader.join()
            m.source_up.labels(**labels).set(0)
        if error is not None:
            self._fail(error)

    def _next_batch(self, buffer: FrameBuffer[Frame]) -> tuple[list[Frame], bool, StreamprocError | None]:
        """(frames, stream ended, source error): the next frame, plus those already waiting behind it.

        Frames already decoded are detected together (one network call); it never waits for more, so a
        live stream gains no latency.
        """
        batch: list[Frame] = []
        try:
            batch.append(buffer.get(timeout=0.2))
            while len(batch) < self._config.detector.max_batch:
                batch.append(buffer.get(timeout=0))
        except TimeoutError:
            return batch, False, None
        except BufferClosed:
            return batch, True, None
        except StreamprocError as err:  # the decode thread failed (SourceError)
            return batch, True, err
        return batch, False, None

    def _fail(self, err: StreamprocError) -> None:
        self.stats.error = str(err)
        self._metrics.source_errors.labels(stream=self.stream_id).inc()
        log.error("stream %s: %s", self.stream_id, err)

    def _process(self, frames: list[Frame]) -> None:
        t0 = time.perf_counter()
        detections = self._detector.detect([f.image for f in frames])
        per_frame = (time.perf_counter() - t0) / len(frames)
        for frame, dets in zip(frames, detections, strict=True):
            self._process_frame(frame, dets, per_frame)

    def _process_frame(self, frame: Frame, dets: Detections, detect_s: float) -> None:
        m, sid = self._metrics, self.stream_id
        t1 = time.perf_counter()
        t0 = t1 - detect_s
        out = self._tracker.update(dets, frame.pts_s)
        t2 = time.perf_counter()
        m.stage_seconds.labels(stream=sid, stage="detect").observe(t1 - t0)
        m.stage_seconds.labels(stream=sid, stage="track").observe(t2 - t1)
        m.faces_detected.labels(stream=sid).inc(len(dets))
        m.tracks_started.labels(stream=sid).inc(len(out.started))
        m.tracks_live.labels(stream=sid).set(self._tracker.live_count)
        self.stats.frames += 1
        self.stats.faces += len(dets)
        self.stats.tracks += len(out.started)
        timings = {"detect": (t1 - t0) * 1000, "track": (t2 - t1) * 1000}
        for tracked in out.active:
            if not self._shots.wants(tracked.track_id, frame.pts_s):
                continue  # this track has its shots until the next refresh: no alignment needed
            i = tracked.det_index
            chip = align(frame.image, dets.landmarks[i], self._embedder.chip_template)
            quality = self._gate.assess(dets.boxes[i], dets.landmarks[i], float(dets.scores[i]), chip)
            box = tuple(float(v) for v in dets.boxes[i])
            payload = ShotPayload(
                chip=chip,
                box=(box[0], box[1], box[2], box[3]),
                frame_pts_s=frame.pts_s,
                captured_at=frame.captured_at,
                timings_ms=timings,
            )
            self._shots.offer(tracked.track_id, frame.pts_s, quality, payload)
        m.stage_seconds.labels(stream=sid, stage="align").observe(time.perf_counter() - t2)
        due = self._shots.due(frame.pts_s)
        for track_id in out.ended:
            due += self._shots.end(track_id)
            self._ended.add(track_id)
        self._submit(due)
        self._collect(block=False)
        m.frames_processed.labels(stream=sid).inc()
        if self._on_frame is not None:
            self._on_frame(sid, frame)

    def _finish(self) -> None:
        """End of stream (or stop): end every track, embed their last shots, wait for all results."""
        due: list[Shot[ShotPayload]] = []
        for track_id in self._tracker.flush():
            due += self._shots.end(track_id)
            self._ended.add(track_id)
        self._submit(due)
        self._collect(block=True)

    def _submit(self, shots: list[Shot[ShotPayload]]) -> None:
        for shot in shots:
            self._pending.append((shot, self._batcher.submit(shot.payload.chip), time.perf_counter()))
        self._metrics.queue_depth.labels(stream=self.stream_id, queue="embed").set(len(self._pending))

    def _collect(self, block: bool) -> None:
        """Handle finished embeddings in submission order (the policy sees each track's shots in order)."""
        while self._pending and (block or self._pending[0][1].done()):
            shot, future, submitted = self._pending.popleft()
            vector = future.result()
            embed_ms = (time.perf_counter() - submitted) * 1000
            self._handle(shot, vector, embed_ms)
        if not self._pending:
            for track_id in self._ended:
                self._policy.end_track(track_id)
            self._ended.clear()

    def _handle(self, shot: Shot[ShotPayload], vector: NDArray[np.float32], embed_ms: float) -> None:
        m, sid = self._metrics, self.stream_id
        m.embeddings.labels(stream=sid).inc()
        m.stage_seconds.labels(stream=sid, stage="embed").observe(embed_ms / 1000)
        self.stats.embeddings += 1
        t0 = time.perf_counter()
        candidates = self._watchlist.get().search(vector[None, :], k=3)[0]
        t1 = time.perf_counter()
        result = ShotResult(t_s=shot.t_s, candidates=tuple((c.subject_id, c.distance) for c in candidates))
        flags = self._policy.observe(shot.track_id, result)
        t2 = time.perf_counter()
        m.stage_seconds.labels(stream=sid, stage="search").observe(t1 - t0)
        m.stage_seconds.labels(stream=sid, stage="policy").observe(t2 - t1)
        if not candidates or candidates[0].distance > self._threshold.distance:
            m.comparisons_nonmatching.labels(stream=sid).inc()
        names = {c.subject_id: c.display_name for c in candidates}
        timings = {
            **shot.payload.timings_ms,
            "embed": embed_ms,
            "search": (t1 - t0) * 1000,
            "policy": (t2 - t1) * 1000,
        }
        for flag in flags:
            self._publish(flag, shot, names.get(flag.subject_id, flag.subject_id), timings)
        # The vector and chip go out of scope here: nothing about a non-matching face is kept.

    def _publish(self, flag: Flag, shot: Shot[ShotPayload], name: str, timings: dict[str, float]) -> None:
        m, sid = self._metrics, self.stream_id
        m.matches.labels(stream=sid).inc()
        self.stats.flags += 1
        q: Quality = shot.quality
        jpeg = None
        if self._config.events.include_face_jpeg:
            ok, buf = cv2.imencode(".jpg", shot.payload.chip[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                jpeg = base64.b64encode(buf.tobytes()).decode("ascii")
        th = self._threshold
        t_pub = time.time()
        latency = {**timings, "end_to_end": (t_pub - shot.payload.captured_at) * 1000}
        event = MatchEvent(
            event_id=make_event_id(sid, flag.track_id, flag.subject_id, flag.t_s),
            stream_id=sid,
            track_id=flag.track_id,
            subject_id=flag.subject_id,
            subject_name=name,
            distance=flag.distances[0],
            distances=list(flag.distances),
            threshold=flag.threshold,
            metric=self._embedder.identity.metric,
            calibration=CalibrationInfo(
                fmr_target=th.fmr_target or 0.0, source=th.source, uncalibrated=th.uncalibrated
            ),
            k=self._config.policy.k,
            n=self._config.policy.n,
            frame_pts_s=shot.payload.frame_pts_s,
            captured_at=shot.payload.captured_at,
            published_at=t_pub,
            latency_ms=latency,
            box=shot.payload.box,
            quality=QualityInfo(
                score=q.score,
                face_px=q.face_px,
                sharpness=q.sharpness,
                yaw=q.yaw,
                detector_score=q.detector_score,
            ),
            face_jpeg_b64=jpeg,
        )
        if not self._publisher.publish(event):
            log.info("event %s already journaled (a resend): not published again", event.event_id)
            return
        m.events_published.labels(stream=sid).inc()
        if self._audit is not None:  # every flag is audited (never the faces that matched nothing)
            self._audit.append(
                "pipeline",
                "flag",
                subject_id=flag.subject_id,
                details={
                    "event_id": event.event_id,
                    "stream": sid,
                    "track": flag.track_id,
                    "distance": round(flag.distances[0], 6),
                    "threshold": flag.threshold,
                    "frame_pts_s": round(shot.payload.frame_pts_s, 3),
                },
            )
        m.end_to_end_seconds.labels(stream=sid).observe(t_pub - shot.payload.captured_at)
        m.stage_seconds.labels(stream=sid, stage="publish").observe(time.time() - t_pub)
        self.stats.events += 1


class Pipeline:
    """Builds the shared stages once and runs one :class:`StreamWorker` per configured stream."""

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
        self._config = config
        self._stop = threading.Event()
        self._watchlist = watchlist
        self._feed = feed
        self._batcher: MicroBatcher[NDArray[np.uint8], NDArray[np.float32]] = MicroBatcher(
            lambda chips: list(embedder.embed(np.stack(list(chips)))),
            BatchPolicy(max_batch=embedder.max_batch, max_wait_s=EMBED_MAX_WAIT_S, queue_size=1024),
            on_batch=self.metrics.embed_batch_size.observe,
            name="embed",
        )
        for source in config.sources:
            self.metrics.init_stream(source.id, drop_reasons=("buffer_full",), queues=("decoded", "embed"))
        self.workers = [
            StreamWorker(
                source,
                config,
                detector,
                embedder,
                self._batcher,
                watchlist,
                threshold,
                feed,
                self.metrics,
                self._stop,
                on_frame,
                audit,
            )
            for source in config.sources
        ]
        self.metrics.watchlist_subjects.set(len(watchlist.get()))

    @property
    def publisher_endpoint(self) -> str:
        return self._feed.endpoint

    @property
    def replay_endpoint(self) -> str | None:
        return self._feed.replay_endpoint

    def stop(self) -> None:
        """Ask every stream to stop; each drains what it has and publishes pending flags."""
        self._stop.set()

    def close(self) -> None:
        """Release the event feed (sockets, journal) and the watchlist (after :meth:`run`)."""
        self._feed.close()
        self._watchlist.close()

    def run(self) -> dict[str, StreamStats]:
        """Run until every stream ends (files) or :meth:`stop` is called; returns per-stream stats."""
        for worker in self.workers:
            worker.start()
        last_prune = time.monotonic()
        try:
            while any(w.is_alive() for w in self.workers):
                for worker in self.workers:
                    worker.join(timeout=0.5)
                self.metrics.watchlist_subjects.set(len(self._watchlist.get()))
                if time.monotonic() - last_prune > JOURNAL_PRUNE_EVERY_S:
                    self._feed.prune()
                    last_prune = time.monotonic()
        finally:
            self._stop.set()
            for worker in self.workers:
                worker.join()
            self._batcher.close()
        return {w.stream_id: w.stats for w in self.workers}
