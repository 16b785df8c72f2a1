"""ByteTrack-style face tracking: turn per-frame detections into tracks with stable, dense ids.

Why ByteTrack: body-camera faces blur and turn away for a few frames, and the detector's score drops with
them. Low-score detections are therefore not thrown away: they may *extend* a track that is already
confirmed (second association) but may never *start* one, so shaky frames keep the id without letting
clutter create tracks. They also keep a *tentative* track alive (for at most ``max_lost_s`` after its last
confident detection) without counting towards ``min_hits``: a small face that a native tile finds at 0.9 and
the next frames' window sees at 0.5-0.7 is confirmed on its next confident frame instead of being dropped at
the first unsure one, while only confident detections can start and confirm a track.

Motion model: a constant-velocity Kalman filter on ``(cx, cy, w, h)`` driven by media time. The process
noise is that of continuous white-noise acceleration plus a position random walk (body-camera shake), both
integrated over ``dt``, so irregular sampling (``max_fps``, dropped frames) is handled and ``dt = 0`` is an
exact no-op. Noise is proportional to the box height, so near and far faces are treated alike.

A frame on which the caller did not look for a track (the detection schedule measures a steady face every
other frame) is not a miss: :meth:`FaceTracker.update` takes the keys of such tracks, and carries them by their
prediction with their state unchanged.

Ids are consumed only when a track is confirmed (after ``min_hits`` matched frames), so the ids operators see
are dense: 1, 2, 3, ... per tracker instance, i.e. per stream. If media time goes backwards (a folder source
starting its next file, or a live session restarting), every track ends: positions in another clip say
nothing about this one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection
from dataclasses import dataclass

import lap
import numpy as np
from numpy.typing import NDArray

from streamproc.config_recognition import TrackerConfig
from streamproc.types import Detections

# Filter tuning, as fractions of the box height (faces are about square).
_MEAS_STD = 0.05  # measurement noise of each of cx, cy, w, h (ByteTrack's 1/20)
_POS_WALK_STD = 0.3  # position random walk per sqrt(second): camera shake the velocity does not explain
_ACC_STD = 2.0  # white-noise acceleration, box heights per s^2 per sqrt(s)
_INIT_POS_STD = 0.1  # initial uncertainty of cx, cy, w, h
_INIT_VEL_STD = 1.0  # initial uncertainty of velocities, box heights per second
_MIN_SIDE = 1e-3  # predicted widths/heights are clamped here so IoU stays defined

_DIAG = np.arange(4)  # the diagonal of each 4x4 block of the state covariance
_DIAG.setflags(write=False)


def _block_diagonals(*blocks: tuple[int, int]) -> NDArray[np.float64]:
    """A read-only (8, 8) 0/1 mask with ones on the diagonals of the given 4x4 blocks (row block, column block)."""
    mask = np.zeros((8, 8))
    for row, col in blocks:
        mask[_DIAG + 4 * row, _DIAG + 4 * col] = 1.0
    mask.setflags(write=False)
    return mask


# Where each term of the process noise sits (the diagonals of the position, cross and velocity blocks): a sum of
# scaled masks builds Q with the same values as indexed writes, at half the cost.
_Q_POS = _block_diagonals((0, 0))
_Q_CROSS = _block_diagonals((0, 1), (1, 0))
_Q_VEL = _block_diagonals((1, 1))


@dataclass(frozen=True)
class TrackedDetection:
    """A confirmed track matched to row ``det_index`` of this frame's :class:`Detections`."""

    track_id: int
    det_index: int


@dataclass(frozen=True)
class Predictions:
    """Where every live track (tentative, confirmed, lost) is expected at one media time, for the detection
    schedule to choose where to look. Row ``i`` of each array is one track:

    - ``boxes``: (N, 4) float64 x1y1x2y2 frame pixels, the Kalman prediction;
    - ``keys``: (N,) int64, the tracker's own serial for the track (stable while it lives, also before it is
      confirmed; not the track id operators see): pass the keys of tracks not searched to
      :meth:`FaceTracker.update`;
    - ``idle``: (N,) int64, updates since a detection last matched the track (0: matched on the last one);
    - ``ids``: (N,) int64, the track id, 0 while the track is tentative (not yet confirmed).
    """

    boxes: NDArray[np.float64]
    keys: NDArray[np.int64]
    idle: NDArray[np.int64]
    ids: NDArray[np.int64]

    @property
    def confirmed(self) -> NDArray[np.bool_]:
        """(N,) bool: the track is confirmed (tracked or lost), not tentative."""
        return self.ids > 0

    @classmethod
    def new(cls, boxes: NDArray[np.floating]) -> Predictions:
        """Tracks at ``boxes`` that are all new: tentative, just matched, keys 0..N-1 (tests, offline tools)."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        return cls(b, np.arange(len(b), dtype=np.int64), np.zeros(len(b), np.int64), np.zeros(len(b), np.int64))


@dataclass(frozen=True)
class TrackerOutput:
    """One frame's result: matched confirmed tracks, and ids that started or ended this frame."""

    active: tuple[TrackedDetection, ...]
    started: tuple[int, ...]
    ended: tuple[int, ...]


class TrackState(enum.Enum):
    """Life cycle of a track: TENTATIVE -> CONFIRMED <-> LOST -> REMOVED (tentative ones just vanish)."""

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"
    REMOVED = "removed"


def iou_matrix(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """(N, M) intersection over union of ``(N, 4)`` and ``(M, 4)`` x1, y1, x2, y2 boxes (0 when empty)."""
    a64 = np.asarray(a, np.float64).reshape(-1, 4)
    b64 = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a64) == 0 or len(b64) == 0:
        return np.zeros((len(a64), len(b64)))
    # np.maximum(x, 0.0) is np.clip(x, 0.0, None) (NaN included) at a fifth of its per-call cost.
    x1 = np.maximum(a64[:, None, 0], b64[None, :, 0])
    y1 = np.maximum(a64[:, None, 1], b64[None, :, 1])
    x2 = np.minimum(a64[:, None, 2], b64[None, :, 2])
    y2 = np.minimum(a64[:, None, 3], b64[None, :, 3])
    inter = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    area_a = np.maximum(a64[:, 2] - a64[:, 0], 0.0) * np.maximum(a64[:, 3] - a64[:, 1], 0.0)
    area_b = np.maximum(b64[:, 2] - b64[:, 0], 0.0) * np.maximum(b64[:, 3] - b64[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    out: NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def _xyxy_to_cxcywh(box: NDArray[np.floating]) -> NDArray[np.float64]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float64)


def _cxcywh_to_xyxy(mean: NDArray[np.float64]) -> NDArray[np.float64]:
    cx, cy = float(mean[0]), float(mean[1])
    w, h = max(float(mean[2]), _MIN_SIDE), max(float(mean[3]), _MIN_SIDE)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float64)


def _scale(mean: NDArray[np.float64]) -> float:
    """Box height used to scale noise, never below one pixel."""
    return max(float(mean[3]), 1.0)


def kf_init(box: NDArray[np.floating]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """State ``(cx, cy, w, h, vcx, vcy, vw, vh)`` and covariance for a new track at ``box`` (xyxy)."""
    z = _xyxy_to_cxcywh(box)
    mean = np.concatenate([z, np.zeros(4)])
    s = _scale(mean)
    std = np.array([_INIT_POS_STD * s] * 4 + [_INIT_VEL_STD * s] * 4)
    return mean, np.diag(std**2)


def kf_transition(dt: float) -> NDArray[np.float64]:
    """The (8, 8) constant-velocity transition over ``dt`` seconds (one per frame serves every track)."""
    f = np.eye(8)
    f[_DIAG, _DIAG + 4] = dt
    return f


def kf_predict(
    mean: NDArray[np.float64],
    cov: NDArray[np.float64],
    dt: float,
    transition: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Advance the state by ``dt`` seconds (``dt <= 0`` returns it unchanged); ``transition``:
    :func:`kf_transition` of the same ``dt`` where the caller already has it."""
    if dt <= 0:
        return mean, cov
    f = kf_transition(dt) if transition is None else transition
    s = _scale(mean)
    q_acc = (_ACC_STD * s) ** 2
    q_walk = (_POS_WALK_STD * s) ** 2
    # kron([[pos, cross], [cross, vel]], eye(4)), written out (np.kron is ~10x slower)
    q = (q_acc * dt**3 / 3 + q_walk * dt) * _Q_POS + (q_acc * dt**2 / 2) * _Q_CROSS + (q_acc * dt) * _Q_VEL
    new_cov = f @ cov @ f.T + q
    return kf_predict_mean(mean, dt), (new_cov + new_cov.T) / 2


def kf_predict_mean(mean: NDArray[np.float64], dt: float) -> NDArray[np.float64]:
    """The state advanced by ``dt`` seconds without its covariance: where a track's box is expected, for
    callers that only look (the detection schedule asks every frame)."""
    if dt <= 0:
        return mean
    out = mean.copy()
    out[:4] += dt * mean[4:]
    return out


def kf_update(
    mean: NDArray[np.float64], cov: NDArray[np.float64], box: NDArray[np.floating]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Correct the state with a measured box (xyxy)."""
    z = _xyxy_to_cxcywh(box)
    # The measurement is the first four state entries (H = [I 0]), so H P, H P H^T and H x are these slices.
    hp = cov[:4]
    s = hp[:, :4] + np.eye(4) * (_MEAS_STD * _scale(mean)) ** 2
    gain = np.linalg.solve(s, hp).T  # (8, 4) = P H^T S^-1, S symmetric
    new_mean = mean + gain @ (z - mean[:4])
    new_cov = cov - gain @ hp
    return new_mean, (new_cov + new_cov.T) / 2


@dataclass(eq=False, slots=True)
class _Track:
    """Mutable per-track filter state; private to the tracker."""

    mean: NDArray[np.float64]
    cov: NDArray[np.float64]
    last_seen_s: float
    key: int  # the tracker's serial for this track (see Predictions.keys)
    state: TrackState = TrackState.TENTATIVE
    hits: int = 1  # frames matched by a confident (>= high_score) detection
    last_high_s: float = 0.0  # media time of the last confident match
    idle: int = 0  # updates since a detection last matched this track
    track_id: int = 0  # 0 until confirmed: ids are only consumed by confirmed tracks

    def box(self) -> NDArray[np.float64]:
        return _cxcywh_to_xyxy(self.mean)


def _assign(ious: NDArray[np.float64], gate: float) -> list[tuple[int, int]]:
    """Optimal assignment maximising total IoU over pairs with IoU >= gate; (row, col) pairs.

    Jonker-Volgenant (``lap``, 4 ms to import) rather than ``scipy.optimize`` (0.4 s of every command's
    start-up); the same optimum: a full assignment minimising the negated gated IoU."""
    if ious.size == 0:
        return []
    cost = -np.where(ious >= gate, ious, 0.0)
    cols, _ = lap.lapjv(cost, extend_cost=True, return_cost=False)  # row -> column, -1 for none
    return [(r, int(c)) for r, c in enumerate(cols) if c >= 0 and ious[r, c] >= gate]


class FaceTracker:
    """Per-stream face tracker; owns its tracks and its id counter."""

    def __init__(self, config: TrackerConfig) -> None:
        if config.low_score > config.high_score:
            raise ValueError(f"low_score {config.low_score} must be <= high_score {config.high_score}")
        self._config = config
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._next_key = 0
        self._last_t: float | None = None

    @property
    def live_count(self) -> int:
        """Confirmed tracks (tracked or lost) not yet ended: ``sum(started) - sum(ended)`` so far."""
        return sum(1 for t in self._tracks if t.track_id)

    def predict(self, t_s: float) -> Predictions:
        """Every track not yet ended, predicted to media time ``t_s`` without changing any state: where to look
        for known faces before detecting (see :class:`Predictions`)."""
        dt = 0.0 if self._last_t is None else max(t_s - self._last_t, 0.0)
        tracks = self._tracks
        return Predictions(
            boxes=np.array([_cxcywh_to_xyxy(kf_predict_mean(t.mean, dt)) for t in tracks], np.float64).reshape(-1, 4),
            keys=np.array([t.key for t in tracks], np.int64),
            idle=np.array([t.idle for t in tracks], np.int64),
            ids=np.array([t.track_id for t in tracks], np.int64),
        )

    def update(self, detections: Detections, t_s: float, unsearched: Collection[int] = frozenset()) -> TrackerOutput:
        """Associate this frame's detections (media time ``t_s``) with the tracks.

        ``unsearched``: keys (:attr:`Predictions.keys`) of tracks that this frame's detection did not look for
        (the schedule measures a steady track every other frame). Unmatched, such a track is carried by its
        prediction with its state unchanged, instead of counting as a miss (a confirmed track going lost may
        no longer be extended by unsure detections; a tentative one would be dropped); ``max_lost_s`` still
        ends it. A match is taken as usual."""
        if not math.isfinite(t_s):
            raise ValueError(f"media time must be finite, got {t_s}")
        cfg = self._config
        ended: list[int] = []
        if self._last_t is not None and t_s < self._last_t:
            ended.extend(self.flush())
        dt = 0.0 if self._last_t is None else t_s - self._last_t
        self._last_t = t_s

        if dt > 0:
            f = kf_transition(dt)
            for track in self._tracks:
                track.mean, track.cov = kf_predict(track.mean, track.cov, dt, f)

        boxes = detections.boxes
        scores = detections.scores
        valid = (
            np.isfinite(boxes).all(axis=1)
            & np.isfinite(scores)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        high = np.flatnonzero(valid & (scores >= cfg.high_score))
        low = np.flatnonzero(valid & (scores >= cfg.low_score) & (scores < cfg.high_score))

        matched: dict[int, int] = {}  # index into self._tracks -> detection row
        pred = np.array([t.box() for t in self._tracks], np.float64).reshape(-1, 4)

        # First association: confident detections against every track, whatever its state.
        for r, c in _assign(iou_matrix(pred, boxes[high]), cfg.match_iou):
            matched[r] = int(high[c])
        used_high = set(matched.values())

        # Second association: unsure detections may only continue tracks that are tracked (confirmed, or
        # tentative and recently confident); they never start, confirm or revive one.
        rest = [
            i
            for i, t in enumerate(self._tracks)
            if i not in matched
            and (
                t.state is TrackState.CONFIRMED
                or (t.state is TrackState.TENTATIVE and t_s - t.last_high_s <= cfg.max_lost_s)
            )
        ]
        for r, c in _assign(iou_matrix(pred[rest], boxes[low]), cfg.match_iou):
            matched[rest[r]] = int(low[c])

        started: list[int] = []
        active: list[TrackedDetection] = []
        survivors: list[_Track] = []
        for i, track in enumerate(self._tracks):
            row = matched.get(i)
            track.idle = 0 if row is not None else track.idle + 1
            if row is not None:
                track.mean, track.cov = kf_update(track.mean, track.cov, boxes[row])
                track.last_seen_s = t_s
                if row in used_high:
                    track.hits += 1
                    track.last_high_s = t_s
                if track.state is TrackState.TENTATIVE and track.hits >= cfg.min_hits:
                    self._confirm(track)
                    started.append(track.track_id)
                elif track.state is TrackState.LOST:
                    track.state = TrackState.CONFIRMED
                if track.state is TrackState.CONFIRMED:
                    active.append(TrackedDetection(track.track_id, row))
                survivors.append(track)
            elif t_s - track.last_seen_s > cfg.max_lost_s or (
                track.state is TrackState.TENTATIVE and track.key not in unsearched
            ):
                if track.track_id:
                    ended.append(track.track_id)
                track.state = TrackState.REMOVED  # a tentative one is dropped silently: no id was spent
            elif track.key in unsearched:
                survivors.append(track)  # not looked for: carried by the prediction, state unchanged
            else:
                if track.state is TrackState.CONFIRMED:
                    track.state = TrackState.LOST
                    track.mean[6:] = 0.0  # keep drifting with the motion, but stop growing or shrinking
                survivors.append(track)

        for new_row in high.tolist():
            if new_row in used_high:
                continue
            mean, cov = kf_init(boxes[new_row])
            track = _Track(mean=mean, cov=cov, last_seen_s=t_s, key=self._next_key, last_high_s=t_s)
            self._next_key += 1
            if cfg.min_hits <= 1:
                self._confirm(track)
                started.append(track.track_id)
                active.append(TrackedDetection(track.track_id, new_row))
            survivors.append(track)

        self._tracks = survivors
        active.sort(key=lambda a: a.track_id)
        return TrackerOutput(active=tuple(active), started=tuple(sorted(started)), ended=tuple(sorted(ended)))

    def flush(self) -> tuple[int, ...]:
        """End every track (end of stream or clip); returns the ids of confirmed tracks that ended.

        The id counter is kept, so ids stay unique for the life of this tracker.
        """
        ended = tuple(sorted(t.track_id for t in self._tracks if t.track_id))
        for track in self._tracks:
            track.state = TrackState.REMOVED
        self._tracks = []
        self._last_t = None
        return ended

    def _confirm(self, track: _Track) -> None:
        track.state = TrackState.CONFIRMED
        track.track_id = self._next_id
        self._next_id += 1
