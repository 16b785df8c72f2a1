"""Best-shot selection: embed a few good faces per track, never every frame.

Embedding is the expensive stage and consecutive frames of one face carry nearly the same identity
evidence; what varies is blur, pose and size. So each track is cut into short windows of media time and
only the best passing face of each window is embedded. A track takes at most ``max_shots`` shots, then one
more every ``refresh_s`` (from its last shot) so that a face seen for minutes still gets a fresh look,
for instance once it turns towards the camera.

Windows: a track's window opens at an offer (its first, or the first after the previous window closed)
and closes ``window_s`` later. Once a track has used its ``max_shots``, offers are ignored until
``refresh_s`` has passed since its last shot; the next window then opens. Per track only the current best
face is held, so memory does not grow with track length.

Call order per frame does not matter: an offer at or after its window's end first closes that window,
so a face is never counted in a window it falls outside of.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streamproc.config import BestShotConfig
from streamproc.types import Quality

T = TypeVar("T")


@dataclass(frozen=True)
class Shot(Generic[T]):
    """A face chosen for embedding; ``payload`` is whatever the pipeline attached (chip, box, frame ref)."""

    track_id: int
    t_s: float
    quality: Quality
    payload: T


@dataclass(eq=False, slots=True)
class _TrackWindows(Generic[T]):
    """Mutable per-track state; private to the selector."""

    window_start: float | None = None
    best: Shot[T] | None = None
    shots: int = 0
    last_shot_s: float | None = None
    ready: list[Shot[T]] = field(default_factory=list)  # closed by an offer, returned by the next due()


class BestShotSelector(Generic[T]):
    """Per-stream best-shot selector; one window state per live track."""

    def __init__(self, config: BestShotConfig) -> None:
        self._config = config
        self._tracks: dict[int, _TrackWindows[T]] = {}

    def offer(self, track_id: int, t_s: float, quality: Quality, payload: T) -> None:
        """Consider one face of a track; faces failing the quality gate are never chosen."""
        state = self._tracks.get(track_id)
        if state is None:
            state = self._tracks[track_id] = _TrackWindows()
        if state.window_start is not None and self._closed(state.window_start, t_s):
            self._close(state)
        if state.window_start is None:
            if not self._may_shoot(state, t_s):
                return
            state.window_start = t_s
        if quality.passed and (state.best is None or quality.score > state.best.quality.score):
            state.best = Shot(track_id, t_s, quality, payload)

    def wants(self, track_id: int, t_s: float) -> bool:
        """Whether an offer for this track at ``t_s`` could be used (read-only).

        Lets the caller skip aligning and scoring faces of tracks that have used their shots until the
        next refresh: after the first few windows, most faces of a long track need no work at all.
        """
        state = self._tracks.get(track_id)
        if state is None:
            return True
        if state.window_start is not None and not self._closed(state.window_start, t_s):
            return True
        shots, last = state.shots, state.last_shot_s
        if state.window_start is not None and state.best is not None:  # the offer would close this window first
            shots, last = shots + 1, state.best.t_s
        return self._allowed(shots, last, t_s)

    def keeps(self, track_id: int, t_s: float, quality: Quality) -> bool:
        """Whether an offer of this face at ``t_s`` would become its window's best (read-only).

        Lets the caller prepare what only a chosen face needs (a native view to re-detect it in) for these
        faces alone: a steady face offered every frame would otherwise pay for it every frame.
        """
        if not quality.passed or not self.wants(track_id, t_s):
            return False
        state = self._tracks.get(track_id)
        if state is None or state.best is None or state.window_start is None:
            return True
        if self._closed(state.window_start, t_s):
            return True  # the offer closes this window and opens the next, where it is the first face
        return quality.score > state.best.quality.score

    def due(self, t_s: float) -> list[Shot[T]]:
        """Shots of windows that have closed by ``t_s`` (each window's best passing face), by track id."""
        out: list[Shot[T]] = []
        for state in self._tracks.values():
            if state.window_start is not None and self._closed(state.window_start, t_s):
                self._close(state)
            out.extend(state.ready)
            state.ready.clear()
        out.sort(key=lambda s: (s.track_id, s.t_s))
        return out

    def end(self, track_id: int) -> list[Shot[T]]:
        """The track ended: its pending shots, the open window's best included, then forget the track."""
        state = self._tracks.pop(track_id, None)
        if state is None:
            return []
        self._close(state)
        return state.ready

    def shots_taken(self, track_id: int) -> int:
        """Shots chosen so far for a live track (0 for unknown or ended tracks)."""
        state = self._tracks.get(track_id)
        return 0 if state is None else state.shots

    def _closed(self, window_start: float, t_s: float) -> bool:
        # Time going backwards (a new clip) also closes the window: it cannot be measured any more.
        return t_s - window_start >= self._config.window_s or t_s < window_start

    def _may_shoot(self, state: _TrackWindows[T], t_s: float) -> bool:
        return self._allowed(state.shots, state.last_shot_s, t_s)

    def _allowed(self, shots: int, last_shot_s: float | None, t_s: float) -> bool:
        if shots < self._config.max_shots:
            return True
        return last_shot_s is not None and t_s - last_shot_s >= self._config.refresh_s

    def _close(self, state: _TrackWindows[T]) -> None:
        if state.best is not None:
            state.ready.append(state.best)
            state.shots += 1
            state.last_shot_s = state.best.t_s
        state.window_start = None
        state.best = None
