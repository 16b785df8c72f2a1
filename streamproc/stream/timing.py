"""Media time of a source's frames: per-file clocks, the timeline shared across files and connections, and
``max_fps`` sampling by timestamp.

Times are float seconds computed from exact rationals (integer pts times the stream's time base); times within
:data:`_EPS_S` of each other count as equal.
"""

from __future__ import annotations

from fractions import Fraction

from av.video.stream import VideoStream

FALLBACK_FPS = 30.0
"""Frame rate assumed for timing only when a stream has neither timestamps nor a declared rate."""

_EPS_S = 1e-6  # timestamps equal within this are equal (float rounding of exact rational times)


class RateSampler:
    """Keeps at most ``max_fps`` frames per second of media time, chosen by timestamp (not by count).

    Kept frames follow a grid of ``1/max_fps`` slots: a frame is kept when its time reaches the next slot, and
    the grid restarts at a frame after a gap longer than a slot (or when time goes backwards, e.g. a live
    source restarting its clock). Compared with "at least 1/max_fps after the last kept frame", the grid keeps
    the long-run rate at ``max_fps`` (30 fps sampled at 12 gives 12, not 10); any two kept frames are still at
    least half a slot apart, so variable-frame-rate bursts cannot slip through.
    """

    def __init__(self, max_fps: float | None) -> None:
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be positive, got {max_fps}")
        self._interval = 0.0 if max_fps is None else 1.0 / max_fps
        self._next_due: float | None = None
        self._last_kept: float | None = None

    def keep(self, pts_s: float) -> bool:
        if self._interval == 0.0:
            return True
        due = self._next_due
        restart = due is None or (self._last_kept is not None and pts_s < self._last_kept)
        if not restart and due is not None:
            if pts_s < due - _EPS_S:
                return False
            restart = pts_s - due >= self._interval
        slot = pts_s if restart or due is None else due
        self._next_due = max(slot + self._interval, pts_s + self._interval / 2)
        self._last_kept = pts_s
        return True


class Timeline:
    """Timing state of one :meth:`~streamproc.stream.source.VideoSource.frames` pass, shared by a folder's files
    and a URL's connections."""

    def __init__(self, sampler: RateSampler) -> None:
        self.sampler = sampler
        self.offset = 0.0  # media time at which the current file (or connection) starts
        self.last_pts: float | None = None  # live: media time of the latest decoded frame
        self.last_seen = 0.0  # live: monotonic time at which it was decoded
        self.start: float | None = None  # monotonic time of media time 0, for realtime pacing


class FileClock:
    """Media time of one file's frames relative to its first frame, and the span it covers."""

    def __init__(self, stream: VideoStream) -> None:
        self._time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        self._step = 1.0 / float(rate) if rate else 1.0 / FALLBACK_FPS
        self._first_pts: int | None = None
        self._end = 0.0  # latest relative time seen plus that frame's duration
        self.count = 0

    def relative(self, pts: int | None, duration: int) -> float:
        """Seconds since the file's first frame; without pts, the previous frame's time plus one frame step."""
        step = self._step
        if duration > 0 and self._time_base is not None:
            step = float(duration * self._time_base)
        if pts is not None and self._time_base is not None:
            if self._first_pts is None:
                # Frames without pts may come first (an RTSP stream's first frame often has none): this one
                # then follows them instead of restarting at 0.
                self._first_pts = pts - round(Fraction(self._end) / self._time_base) if self.count else pts
            rel = float(Fraction(pts - self._first_pts) * self._time_base)
        else:
            rel = self._end if self.count else 0.0
        self._end = max(self._end, rel + step)
        self.count += 1
        return rel

    @property
    def span(self) -> float:
        """Media time the file covers (0 when it gave no frame): where the next file of a folder starts."""
        return self._end if self.count else 0.0
