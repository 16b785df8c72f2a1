"""The back half, shared by all streams: embed a batch of best shots → search the watchlist → k-of-n policy →
publish candidates for review.

Batches arrive from :class:`streamproc.runtime.embed_service.EmbedService` (one network call for the chips of many
streams). Messages are handled in arrival order, which per stream is the order sent. Embeddings of faces that
match nothing are dropped on the spot, counted and never stored or logged, and so are their chips.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.config import PipelineConfig
from streamproc.feed.event_feed import EventSink
from streamproc.feed.schema import CalibrationInfo, MatchEvent, QualityInfo, make_event_id
from streamproc.messages import BestShot, Message, StreamOpened, TrackEnded
from streamproc.metrics import PipelineMetrics
from streamproc.records.audit import AuditLog
from streamproc.search.calibration import Threshold, predicted_false_alerts_per_hour
from streamproc.search.fairsearch import FairSearcher, scored_search
from streamproc.search.policy import Flag, MatchPolicy, ShotResult
from streamproc.search.watchlist_handle import WatchlistHandle
from streamproc.vision.embed import OnnxEmbedder

log = logging.getLogger(__name__)


@dataclass
class MatchStats:
    embeddings: int = 0
    flags: int = 0
    events: int = 0


@dataclass
class _StreamState:
    session: str
    policy: MatchPolicy
    stats: MatchStats = field(default_factory=MatchStats)
    live_tracks: set[int] = field(default_factory=set)


TRACK_RATE_WINDOW_S = 600.0
"""Tracks/s for the predicted-false-alerts gauge is measured over this trailing window."""


def _older(session: str, current: str) -> bool:
    """Live sessions are start times: True when ``session`` started before ``current`` (files: never)."""
    if not session or not current:
        return False
    return float(session) < float(current)


@dataclass(frozen=True)
class _Evidence:
    """What a reviewer needs about the candidate besides the probe: who, which template, among how many."""

    name: str
    template_label: int | None
    gallery_size: int


class Matcher:
    """Embeds, searches, applies the match policy per stream, and publishes flags as :class:`MatchEvent` s."""

    def __init__(
        self,
        config: PipelineConfig,
        embedder: OnnxEmbedder,
        watchlist: WatchlistHandle,
        threshold: Threshold,
        feed: EventSink,
        metrics: PipelineMetrics,
        audit: AuditLog | None = None,
    ) -> None:
        self._config = config
        self._embedder = embedder
        self._watchlist = watchlist
        self._threshold = threshold
        self._feed = feed
        self._metrics = metrics
        self._audit = audit
        # With a fair map the threshold applies to its calibrated distances: every search goes through it.
        self._fair = None if threshold.fair_map is None else FairSearcher(threshold.fair_map)
        self._streams: dict[str, _StreamState] = {}
        self._stats: dict[str, MatchStats] = {}
        self._track_starts: dict[str, deque[float]] = {}  # per stream: monotonic times of tracks' first shots
        self._opened_at: dict[str, float] = {}

    @property
    def stats(self) -> dict[str, MatchStats]:
        """Per stream, across sessions."""
        return self._stats

    def process(self, batch: Sequence[Message]) -> None:
        """Handle one batch in order: its chips are embedded in one call first."""
        shots = [m for m in batch if isinstance(m, BestShot)]
        vectors: NDArray[np.float32] | None = None
        embedded_at = time.time()
        if shots:
            t0 = time.perf_counter()
            vectors = self._embedder.embed(np.stack([s.chip for s in shots]))
            embedded_at = time.time()
            self._metrics.embed_batch_size.observe(len(shots))
            self._metrics.embed_batch_seconds.observe(time.perf_counter() - t0)
        i = 0
        for message in batch:
            if isinstance(message, BestShot):
                assert vectors is not None
                self._handle(message, vectors[i], embedded_at)
                i += 1
            elif isinstance(message, TrackEnded):
                state = self._streams.get(message.stream_id)
                if state is not None and state.session == message.session:
                    state.policy.end_track(message.track_id)
                    state.live_tracks.discard(message.track_id)
            else:
                self._open(message)

    def _open(self, message: StreamOpened) -> None:
        """A stream (re)started: a new policy state, so a replayed file flags exactly as the first time."""
        self._streams[message.stream_id] = _StreamState(
            message.session, MatchPolicy(self._config.policy, self._threshold.distance)
        )
        self._stats.setdefault(message.stream_id, MatchStats())
        self._opened_at.setdefault(message.stream_id, time.monotonic())
        self._track_starts.setdefault(message.stream_id, deque())

    def _state(self, shot: BestShot) -> _StreamState | None:
        """The stream's state for this shot; None for a late shot of a live session that has been replaced."""
        state = self._streams.get(shot.stream_id)
        if state is not None and _older(shot.session, state.session):
            # A dead worker's last shots can arrive after its successor opened the stream (ZeroMQ fair-queues
            # their connections): they belong to tracks that ended with that worker.
            return None
        if state is None or state.session != shot.session:
            # This service restarted mid-stream (or the open message was dropped): start the stream's state now.
            self._open(StreamOpened(shot.stream_id, shot.session))
            state = self._streams[shot.stream_id]
        return state

    def _handle(self, shot: BestShot, vector: NDArray[np.float32], embedded_at: float) -> None:
        m, sid = self._metrics, shot.stream_id
        state = self._state(shot)
        if state is None:
            m.shots_dropped.labels(stream=sid, reason="stale_session").inc()
            return
        if shot.track_id not in state.live_tracks:
            state.live_tracks.add(shot.track_id)
            self._track_starts[sid].append(time.monotonic())
        state.stats.embeddings += 1
        self._stats[sid] = state.stats
        m.embeddings.labels(stream=sid).inc()
        embed_s = embedded_at - shot.sent_at
        m.stage_seconds.labels(stream=sid, stage="embed").observe(max(embed_s, 0.0))
        t0 = time.perf_counter()
        watchlist = self._watchlist.get()
        th = self._threshold.distance
        candidates = scored_search(watchlist, vector[None, :], 3, self._fair, within=th)[0]
        t1 = time.perf_counter()
        result = ShotResult(t_s=shot.t_s, candidates=tuple((c.subject_id, c.distance) for c in candidates))
        flags = state.policy.observe(shot.track_id, result)
        t2 = time.perf_counter()
        m.stage_seconds.labels(stream=sid, stage="search").observe(t1 - t0)
        m.stage_seconds.labels(stream=sid, stage="policy").observe(t2 - t1)
        if not candidates or candidates[0].distance > th:
            m.comparisons_nonmatching.labels(stream=sid).inc()
        names = {c.subject_id: c.display_name for c in candidates}
        labels = {c.subject_id: c.label for c in candidates}
        timings = {
            **shot.timings_ms,
            "embed": embed_s * 1000,
            "search": (t1 - t0) * 1000,
            "policy": (t2 - t1) * 1000,
        }
        for flag in flags:
            evidence = _Evidence(
                name=names.get(flag.subject_id, flag.subject_id),
                template_label=labels.get(flag.subject_id),
                gallery_size=len(watchlist),
            )
            self._publish(state, flag, shot, evidence, timings)
        # The vector and chip go out of scope here: nothing about a non-matching face is kept.

    def update_predictions(self, gallery_size: int) -> None:
        """Set each stream's predicted false alerts per hour (recent tracks/s x measured per-track rate)."""
        rate = self._threshold.track_false_flag_rate(gallery_size, self._config.policy.k, self._config.policy.n)
        now = time.monotonic()
        for sid, starts in self._track_starts.items():
            while starts and now - starts[0] > TRACK_RATE_WINDOW_S:
                starts.popleft()
            span = min(TRACK_RATE_WINDOW_S, max(now - self._opened_at[sid], 1.0))
            value = math.nan if rate is None else predicted_false_alerts_per_hour(len(starts) / span, rate.rate)
            self._metrics.predicted_false_alerts.labels(stream=sid).set(value)

    def _publish(
        self, state: _StreamState, flag: Flag, shot: BestShot, evidence: _Evidence, timings: dict[str, float]
    ) -> None:
        m, sid = self._metrics, shot.stream_id
        m.matches.labels(stream=sid).inc()
        state.stats.flags += 1
        q = shot.quality
        jpeg = None
        if self._config.events.include_face_jpeg:
            ok, buf = cv2.imencode(".jpg", shot.chip[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                jpeg = base64.b64encode(buf.tobytes()).decode("ascii")
        th = self._threshold
        track_rate = th.track_false_flag_rate(evidence.gallery_size, self._config.policy.k, self._config.policy.n)
        t_pub = time.time()
        end_to_end = (t_pub - shot.captured_at) * 1000
        decision = end_to_end - timings.get("best_shot_wait", 0.0)
        latency = {**timings, "end_to_end": end_to_end, "decision": decision}
        # Named by the track, not by when the policy fired: a shot resent after a restart re-fires the same flag
        # under the same id (the journal drops it), and a live stream's new session names new tracks.
        stream_key = sid if not shot.session else f"{sid}@{shot.session}"
        event = MatchEvent(
            event_id=make_event_id(stream_key, flag.track_id, flag.subject_id, shot.track_start_s),
            stream_id=sid,
            track_id=flag.track_id,
            subject_id=flag.subject_id,
            subject_name=evidence.name,
            template_label=evidence.template_label,
            gallery_size=evidence.gallery_size,
            distance=flag.distances[0],
            distances=list(flag.distances),
            threshold=flag.threshold,
            metric=self._embedder.identity.metric,
            calibration=CalibrationInfo(
                fmr_target=th.fmr_target or 0.0,
                source=th.source,
                uncalibrated=th.uncalibrated,
                fpir=None if track_rate is None else track_rate.rate,
                fair_map=self._fair is not None,
            ),
            k=self._config.policy.k,
            n=self._config.policy.n,
            frame_pts_s=shot.t_s,
            captured_at=shot.captured_at,
            published_at=t_pub,
            latency_ms=latency,
            box=shot.box,
            quality=QualityInfo(
                score=q.score,
                face_px=q.face_px,
                sharpness=q.sharpness,
                yaw=q.yaw,
                detector_score=q.detector_score,
            ),
            face_jpeg_b64=jpeg,
        )
        if not self._feed.publish(event):
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
                    "fair_map": self._fair is not None,
                    "frame_pts_s": round(shot.t_s, 3),
                },
            )
        m.end_to_end_seconds.labels(stream=sid).observe(t_pub - shot.captured_at)
        m.decision_seconds.labels(stream=sid).observe(max(decision, 0.0) / 1000)
        m.stage_seconds.labels(stream=sid, stage="publish").observe(time.time() - t_pub)
        state.stats.events += 1
