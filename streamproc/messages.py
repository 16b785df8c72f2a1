"""The values that flow from a stream's front half (decode → detect → track → best shot → align) to the embed
service (embed → search → policy → publish), in one process or across processes (:mod:`streamproc.runtime.wire`).

Per stream they arrive in the order sent: a stream's shots reach the match policy in order, and a track's end
comes after its last shot. ``session`` identifies one run of a stream: empty for files and folders (processing
them again yields the same tracks, so a resend after a restart gets the same event ids and the journal drops
it), the wall-clock start time for live sources (tracks of a new session are new observations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from streamproc.types import Quality


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """A stream (re)started in a worker: the embed service forgets that stream's policy state."""

    stream_id: str
    session: str


@dataclass(frozen=True, slots=True)
class BestShot:
    """One track's best face of a window, aligned and ready to embed.

    chip: (S, S, 3) uint8 RGB, S from the embedder's template. ``track_start_s``: media time of the track's
    first frame (with ``session`` and ``track_id`` it names the track for deterministic event ids).
    ``captured_at``: wall-clock time the frame was decoded; ``sent_at``: when the shot left the front half.
    ``timings_ms``: front-half stage durations for the event's latency breakdown.
    """

    stream_id: str
    session: str
    track_id: int
    track_start_s: float
    t_s: float
    box: tuple[float, float, float, float]
    captured_at: float
    sent_at: float
    quality: Quality
    timings_ms: dict[str, float]
    chip: NDArray[np.uint8] = field(repr=False)


@dataclass(frozen=True, slots=True)
class TrackEnded:
    """The track will send no more shots: its policy history can go."""

    stream_id: str
    session: str
    track_id: int


Message = StreamOpened | BestShot | TrackEnded
