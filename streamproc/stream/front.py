"""A stream's front half, on its own thread: decode → detect → track → best shot → align → :class:`ShotSink`.

It runs inside the single-process pipeline and inside each stream-worker process alike; only the sink differs
(an in-process queue, or a ZeroMQ socket to the embed service). Faces are aligned only when a track still wants
a shot; everything else about a face is dropped with the frame, except, for each face that becomes its track's
best so far, a small native view of it: a chosen shot is detected again there and its chip aligned from those
landmarks (``best_shot.native_landmarks``; :mod:`streamproc.vision.refine`).

Decisions go first: the shots whose windows a frame closes are sent before that frame is detected, and in the
single-process pipeline the front then waits while the embedder works on them (:mod:`streamproc.runtime.turns`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from streamproc.config import PipelineConfig, SourceConfig
from streamproc.errors import StreamprocError
from streamproc.messages import BestShot, Message, StreamOpened, TrackEnded
from streamproc.metrics import PipelineMetrics, StreamSeries
from streamproc.protocols import FaceDetector
from streamproc.stream.authorisation import needs_authorisation
from streamproc.stream.buffer import BufferClosed, FrameBuffer
from streamproc.stream.reader import SourceReader
from streamproc.stream.schedule import DetectionSchedule
from streamproc.stream.source import VideoSource, source_kind
from streamproc.types import SOURCE_STATES, ChipRGB, Detections, Frame, SourceState
from streamproc.vision.align import ChipTemplate, align
from streamproc.vision.bestshot import BestShotSelector, Shot
from streamproc.vision.quality import QualityGate
from streamproc.vision.refine import NativeView, cut_view, refined_chips
from streamproc.vision.regions import drop_straddling
from streamproc.vision.track import FaceTracker

log = logging.getLogger(__name__)


class ShotSink(Protocol):
    """Where a front half sends its messages, in order.

    ``block``: wait for room (files: lose nothing) or give up at once when the queue is full (live: stay
    current). Returns False when the message was dropped; the caller counts it.
    """

    def send(self, message: Message, block: bool) -> bool: ...


class DetectTurn(Protocol):
    """Where a front steps aside before a frame for work that must not wait behind detection (the in-process
    embedder: :class:`~streamproc.runtime.turns.EmbedTurns`); returns the seconds it waited."""

    def wait_turn(self) -> float: ...


@dataclass
class FrontStats:
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    shots: int = 0
    shots_dropped: int = 0
    error: str | None = None
    cut_short: tuple[str, ...] = ()  # files of the source that ended early (truncated, corrupt), warned once each


@dataclass(frozen=True)
class _Pending:
    """A best-shot candidate until it is chosen: the chip and where it came from."""

    chip: NDArray[np.uint8] = field(repr=False)  # (S, S, 3) uint8 RGB
    box: tuple[float, float, float, float]
    captured_at: float
    timings_ms: dict[str, float]
    view: NativeView | None = None  # for best_shot.native_landmarks: the face's native surroundings


class StreamFront:
    """One stream's front half on a thread; see the module docstring."""

    def __init__(
        self,
        source: SourceConfig,
        config: PipelineConfig,
        detector: FaceDetector,
        chip_template: ChipTemplate,
        sink: ShotSink,
        metrics: PipelineMetrics,
        stop: threading.Event,
        on_frame: Callable[[str, Frame], None] | None = None,
        turn: DetectTurn | None = None,
    ) -> None:
        self.source_config = source
        self.stream_id = source.id
        self._config = config
        self._detector = detector
        self._template = chip_template
        self._sink = sink
        self._metrics = metrics
        self._series: StreamSeries | None = None  # created with the first frame, as labels() would
        self._stop = stop
        self._on_frame = on_frame
        self._turn = turn
        self._gate = QualityGate(config.quality)
        self._tracker = FaceTracker(config.tracker)
        det = config.detector
        self._schedule = (
            DetectionSchedule(det.schedule, det.nms_iou, det.min_face_px, config.quality.min_face_px)
            if det.schedule.enabled
            else None
        )
        self._max_side = det.max_side
        self._backlog: Callable[[], float | None] = lambda: None
        self._shots: BestShotSelector[_Pending] = BestShotSelector(config.best_shot)
        self._track_start: dict[int, float] = {}
        self._live = source_kind(source.url) == "url"
        self._session = f"{time.time():.6f}" if self._live else ""
        self._block = True
        auth = config.policy.authorisation
        self._authorised_until = auth.expires.timestamp() if auth is not None and needs_authorisation(source) else None
        self.stats = FrontStats()
        self._thread = threading.Thread(target=self._run, name=f"stream-{self.stream_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ loop
    def _run(self) -> None:
        """Thread body: any failure ends the stream *as a failure*, so a bug never reads as "done, 0 frames"."""
        try:
            self._run_stream()
        except Exception as err:  # a bug in a stage: say so in the summary, keep the traceback
            log.exception("stream %s: internal error", self.stream_id)
            self._fail(StreamprocError(f"internal error ({type(err).__name__}: {err}); see the log for the traceback"))

    def _run_stream(self) -> None:
        sid, m = self.stream_id, self._metrics
        try:
            video = VideoSource(
                self.source_config,
                on_error=lambda _msg: m.source_errors.labels(stream=sid).inc(),
                on_state=self._on_state,
                on_reconnect=lambda _attempt, _wait: m.source_reconnects.labels(stream=sid).inc(),
            )
        except StreamprocError as err:
            self._fail(err)
            return
        self._block = video.buffer_policy == "wait"
        fast_file = not (self._live or self.source_config.realtime)
        if self._schedule is not None and fast_file and not self._config.detector.schedule.adapt_files:
            self._schedule.pin_level(0)  # a file waits for us: every face the schedule can find, however slow
        buffer: FrameBuffer[Frame] = FrameBuffer(
            self.source_config.buffer_frames,
            video.buffer_policy,
            on_drop=lambda n: m.frames_dropped.labels(stream=sid, reason="buffer_full").inc(n),
        )
        if video.buffer_policy == "drop_oldest" or self.source_config.realtime:
            self._backlog = lambda: buffer.depth / self.source_config.buffer_frames
        decoded = m.frames_decoded.labels(stream=sid)
        reader = SourceReader(video, buffer, on_frame=lambda _f: decoded.inc())
        self._send(StreamOpened(stream_id=sid, session=self._session))
        reader.start()
        error: StreamprocError | None = None
        try:
            while not self._stop.is_set():
                if self._authorised_until is not None and time.time() >= self._authorised_until:
                    error = StreamprocError(f"policy.authorisation expired: live search on {sid} stopped")
                    break
                batch, ended, error = self._next_batch(buffer)
                m.queue_depth.labels(stream=sid, queue="decoded").set(buffer.depth)
                if batch:
                    self._process(batch)
                if ended:
                    break
            self._finish()  # also after a source error: what was seen is still judged
        finally:
            reader.stop()
            reader.join()
            self.stats.cut_short = video.cut_short
        if error is not None:
            self._fail(error)

    def _on_state(self, state: SourceState) -> None:
        """Decode thread: export the source's state (one gauge series per state, 1 for the current one)."""
        m, sid = self._metrics, self.stream_id
        for name in SOURCE_STATES:
            m.source_state.labels(stream=sid, state=name).set(1 if name == state else 0)
        m.source_up.labels(stream=sid).set(1 if state == "streaming" else 0)

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
        if self._series is None:
            self._series = StreamSeries(self._metrics, self.stream_id)
        if self._schedule is not None:
            for frame in frames:
                self._process_scheduled(frame, self._schedule, self._series)
            return
        # No schedule: every frame gets the whole-frame pass at detector.max_side (the same gauges, fixed values).
        height, width = frames[0].image.shape[:2]
        series = self._series
        self._send_due(frames[0], series)
        self._wait_turn(series)
        series.detect_interval.set(1)
        series.detect_native_cycle.set(0)
        series.detect_scale.set(min(1.0, (self._max_side or max(height, width)) / max(height, width)))
        t0 = time.perf_counter()
        detections = self._detector.detect([f.image for f in frames])
        per_frame = (time.perf_counter() - t0) / len(frames)
        for frame, dets in zip(frames, detections, strict=True):
            self._send_due(frame, series)  # the first frame's went before detection; later frames' go here
            self._process_frame(frame, dets, per_frame, series)

    def _process_scheduled(self, frame: Frame, schedule: DetectionSchedule, series: StreamSeries) -> None:
        """One frame under the detection schedule: windows around live tracks, plus the whole-frame pass or a
        native tile when due; the schedule then adapts to the time the whole frame took (not the wait for the
        embedder's turn: the decoded-frame backlog shows what that costs)."""
        sent_s = self._send_due(frame, series)
        self._wait_turn(series)
        t0 = time.perf_counter()
        height, width = frame.image.shape[:2]
        plan = schedule.plan(height, width, self._tracker.predict(frame.pts_s))
        dets = schedule.detect(self._detector, frame.image, plan)
        self._process_frame(frame, dets, time.perf_counter() - t0, series, plan.unsearched)
        schedule.observe(frame.pts_s, sent_s + time.perf_counter() - t0, self._backlog())
        state = schedule.state
        series.detect_interval.set(state.interval)
        series.detect_native_cycle.set(state.native_cycle_s)
        series.detect_scale.set(state.full_scale)

    def _send_due(self, frame: Frame, series: StreamSeries) -> float:
        """Send the shots whose windows ``frame`` closes, before it is detected: its faces open new windows and
        cannot join the closed ones, so a decision need not wait for the frame's detection. (Their chips are
        aligned again from native landmarks first: one batched detector call, timed as ``align``.) Returns the
        seconds it took."""
        due = self._shots.due(frame.pts_s)
        if not due:
            return 0.0
        t0 = time.perf_counter()
        chips = self._chips(due)
        series.align_seconds.observe(time.perf_counter() - t0)
        self._emit(due, chips, frame.captured_at)
        return time.perf_counter() - t0

    def _wait_turn(self, series: StreamSeries) -> None:
        if self._turn is not None:
            series.embed_turn_wait.inc(self._turn.wait_turn())

    def _process_frame(
        self,
        frame: Frame,
        dets: Detections,
        detect_s: float,
        series: StreamSeries,
        unsearched: frozenset[int] = frozenset(),
    ) -> None:
        dets = drop_straddling(dets)  # a box between two faces is no one's face (vision/regions.py)
        t1 = time.perf_counter()
        out = self._tracker.update(dets, frame.pts_s, unsearched)
        t2 = time.perf_counter()
        series.detect_seconds.observe(detect_s)
        series.track_seconds.observe(t2 - t1)
        series.faces_detected.inc(len(dets))
        series.tracks_started.inc(len(out.started))
        series.tracks_live.set(self._tracker.live_count)
        self.stats.frames += 1
        self.stats.faces += len(dets)
        self.stats.tracks += len(out.started)
        for track_id in out.started:
            self._track_start[track_id] = frame.pts_s
        timings = {"detect": detect_s * 1000, "track": (t2 - t1) * 1000}
        for tracked in out.active:
            if not self._shots.wants(tracked.track_id, frame.pts_s):
                continue  # this track has its shots until the next refresh: no alignment needed
            i = tracked.det_index
            chip = align(frame.image, dets.landmarks[i], self._template)
            quality = self._gate.assess(dets.boxes[i], dets.landmarks[i], float(dets.scores[i]), chip)
            b = dets.boxes[i]
            # A native view only for a face that becomes its window's best: only such a face can be chosen.
            native = self._config.best_shot.native_landmarks and self._shots.keeps(
                tracked.track_id, frame.pts_s, quality
            )
            pending = _Pending(
                chip=chip,
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                captured_at=frame.captured_at,
                timings_ms=timings,
                view=cut_view(frame.image, b, dets.landmarks[i]) if native else None,
            )
            self._shots.offer(tracked.track_id, frame.pts_s, quality, pending)
        series.align_seconds.observe(time.perf_counter() - t2)
        for track_id in out.ended:
            self._end_track(track_id, frame.captured_at)
        series.frames_processed.inc()
        if self._on_frame is not None:
            self._on_frame(self.stream_id, frame)

    def _finish(self) -> None:
        """End of stream (or stop): end every track so its last shots are embedded and judged."""
        for track_id in self._tracker.flush():
            self._end_track(track_id, time.time())

    def _end_track(self, track_id: int, decided_at: float) -> None:
        shots = self._shots.end(track_id)
        self._emit(shots, self._chips(shots), decided_at)
        self._send(TrackEnded(stream_id=self.stream_id, session=self._session, track_id=track_id))
        self._track_start.pop(track_id, None)

    def _chips(self, shots: list[Shot[_Pending]]) -> list[ChipRGB]:
        """The chip to embed for each shot: aligned again from landmarks found in its native view (one batched
        detector call; :mod:`streamproc.vision.refine`), or the chip aligned when it was offered."""
        views = [s.payload.view for s in shots if s.payload.view is not None]
        refined = iter(refined_chips(self._detector, views, self._template))
        return [next(refined) if s.payload.view is not None else s.payload.chip for s in shots]

    def _emit(self, shots: list[Shot[_Pending]], chips: list[ChipRGB], decided_at: float) -> None:
        """Send chosen shots with their ``chips``; ``decided_at`` is the capture time of the frame that closed
        their windows (or ended their tracks): the wait from the shot's own frame to it is evidence-gathering, by
        design."""
        for shot, chip in zip(shots, chips, strict=True):
            p = shot.payload
            message = BestShot(
                stream_id=self.stream_id,
                session=self._session,
                track_id=shot.track_id,
                track_start_s=self._track_start.get(shot.track_id, shot.t_s),
                t_s=shot.t_s,
                box=p.box,
                captured_at=p.captured_at,
                sent_at=time.time(),
                quality=shot.quality,
                timings_ms={**p.timings_ms, "best_shot_wait": max(decided_at - p.captured_at, 0.0) * 1000},
                chip=chip,
            )
            if self._send(message):
                self.stats.shots += 1
                self._metrics.shots_sent.labels(stream=self.stream_id).inc()

    def _send(self, message: Message) -> bool:
        if self._sink.send(message, self._block):
            return True
        self.stats.shots_dropped += isinstance(message, BestShot)
        self._metrics.shots_dropped.labels(stream=self.stream_id, reason="embed_queue_full").inc()
        return False
