"""Match policy: when does a track become a candidate for human review?

One under-threshold shot is not enough: a single blurry or badly aligned frame can land close to a
watchlist template by chance. A track is flagged for a subject only when at least ``k`` of its last ``n``
shots *agree* on that subject, i.e. the subject is the shot's top candidate and within the calibrated
threshold. A flag only asks a human to look; it carries the evidence (every agreeing distance and the
threshold used) so the reviewer can see how strong it is.

Flags are rationed so reviewers are not flooded: each (track, subject) flags at most once, and a subject
flagged on this stream is not flagged again within ``cooldown_s`` of media time, even by another track (the
same person is often split into several tracks by occlusion). The instance is per stream.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

from streamproc.config import PolicyConfig


@dataclass(frozen=True)
class ShotResult:
    """Watchlist search result of one shot: ``(subject_id, distance)`` pairs, nearest first."""

    t_s: float
    candidates: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        distances = [d for _, d in self.candidates]
        if any(b < a for a, b in itertools.pairwise(distances)):
            raise ValueError(f"candidates must be sorted by ascending distance, got {distances}")

    def agreeing_subject(self, threshold: float) -> str | None:
        """The rank-1 subject when it is within ``threshold``, else None."""
        if not self.candidates:
            return None
        subject, distance = self.candidates[0]
        return subject if distance <= threshold else None


@dataclass(frozen=True)
class Flag:
    """A track is a candidate for review against ``subject_id``.

    ``distances``: the agreeing shots' distances, best first; ``agreeing`` of the last ``window`` shots of
    the track (fewer than the configured ``n`` early in a track) agreed; ``threshold``: the distance used.
    """

    track_id: int
    subject_id: str
    t_s: float
    distances: tuple[float, ...]
    agreeing: int
    window: int
    threshold: float


@dataclass(eq=False, slots=True)
class _TrackHistory:
    results: deque[ShotResult]
    flagged: set[str] = field(default_factory=set)


class MatchPolicy:
    """k-of-n agreement with per-stream cooldown; one instance per stream."""

    def __init__(self, config: PolicyConfig, threshold: float) -> None:
        if config.k > config.n:
            raise ValueError(f"k must be <= n (got k={config.k}, n={config.n})")
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a finite positive distance, got {threshold}")
        self._config = config
        self._threshold = threshold
        self._tracks: dict[int, _TrackHistory] = {}
        self._last_flag_s: dict[str, float] = {}  # subject -> media time of its last flag on this stream

    @property
    def threshold(self) -> float:
        return self._threshold

    def observe(self, track_id: int, result: ShotResult) -> list[Flag]:
        """Record one shot's search result; returns the flags it triggers (usually none)."""
        history = self._tracks.get(track_id)
        if history is None:
            history = self._tracks[track_id] = _TrackHistory(deque(maxlen=self._config.n))
        history.results.append(result)

        agreeing: dict[str, list[float]] = {}
        for shot in history.results:
            subject = shot.agreeing_subject(self._threshold)
            if subject is not None:
                agreeing.setdefault(subject, []).append(shot.candidates[0][1])

        flags: list[Flag] = []
        for subject, distances in agreeing.items():
            if len(distances) < self._config.k or subject in history.flagged or self._cooling(subject, result.t_s):
                continue
            history.flagged.add(subject)
            self._last_flag_s[subject] = result.t_s
            flags.append(
                Flag(
                    track_id=track_id,
                    subject_id=subject,
                    t_s=result.t_s,
                    distances=tuple(sorted(distances)),
                    agreeing=len(distances),
                    window=len(history.results),
                    threshold=self._threshold,
                )
            )
        flags.sort(key=lambda f: f.distances[0])
        return flags

    def end_track(self, track_id: int) -> None:
        """Forget a finished track's history (the stream-wide cooldown is kept)."""
        self._tracks.pop(track_id, None)

    def _cooling(self, subject: str, t_s: float) -> bool:
        """True while ``subject`` was flagged on this stream less than ``cooldown_s`` ago.

        A flag time in the future means media time restarted (a new clip or session): no cooldown then.
        """
        last = self._last_flag_s.get(subject)
        if last is None:
            return False
        since = t_s - last
        if since >= self._config.cooldown_s or since < 0:
            del self._last_flag_s[subject]  # expired: keeps the map as small as the recent flags
            return False
        return True
