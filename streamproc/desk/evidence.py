"""What a candidate page shows, in plain words: the event's numbers explained, and the subject from the watchlist.

Only what the event and the watchlist hold is shown: the probe's aligned face (the event's JPEG, never a frame
around it, so no bystander), the enrolled subject's metadata and its enrolment chips (aligned faces, not photos).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from streamproc.errors import StreamprocError
from streamproc.feed.schema import MatchEvent
from streamproc.search.templates import Subject
from streamproc.search.watchlist import Watchlist


@dataclass(frozen=True)
class Explained:
    """The event's evidence as sentences a reviewer reads (no unit left unexplained)."""

    distance: str
    calibration: str
    false_alarms: str
    shots: str
    quality: str
    uncalibrated: bool


def utc(ts: float) -> str:
    """``2026-12-02 14:05:09 UTC``: a time a reviewer reads and quotes."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(ts: float) -> str:
    """``YYYY-MM-DD`` (UTC) of a timestamp: the queue's date filter."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def one_in(rate: float) -> str:
    """``1 in 3,400`` for 0.000294: rates as people say them."""
    if rate <= 0:
        return "none measured"
    n = 1.0 / rate
    return f"1 in {n:,.0f}" if n >= 10 else f"1 in {n:.1f}"


def explain(event: MatchEvent) -> Explained:
    """Plain-word sentences for the distance, threshold, calibration, per-track false-alarm rate and shots."""
    unit = "Euclidean distance" if event.metric == "l2" else "cosine distance"
    distance = (
        f"{unit} {event.distance:.3f} between the probe and the enrolled face; the system flags at "
        f"{event.threshold:.3f} or less (lower means more alike; {event.threshold - event.distance:.3f} under it)."
    )
    cal = event.calibration
    if cal is None or cal.uncalibrated:
        calibration = (
            "UNCALIBRATED: the threshold was set by hand, so how often it flags the wrong person is not known."
        )
    else:
        calibration = (
            f"The threshold was calibrated ({cal.source or 'calibration file'}) for a false match in about "
            f"{one_in(cal.fmr_target)} comparisons of two different people."
        )
    size = f"{event.gallery_size:,} subjects" if event.gallery_size is not None else "the watchlist"
    if cal is not None and cal.fpir is not None and not cal.uncalibrated:
        false_alarms = (
            f"About {one_in(cal.fpir)} non-enrolled people passing this camera would be flagged like this "
            f"(measured per track, with {size} on the watchlist)."
        )
    else:
        false_alarms = "The false-alarm rate per person passing the camera was not measured for this threshold."
    shots = (
        f"{event.k} of the track's last {event.n} best shots agreed on this subject "
        f"(distances {', '.join(f'{d:.3f}' for d in event.distances)})."
    )
    q = event.quality
    quality = (
        f"Probe quality {q.score:.2f} of 1; face {q.face_px:.0f} px tall in the frame; "
        f"detector confidence {q.detector_score:.2f}."
    )
    return Explained(distance, calibration, false_alarms, shots, quality, event.uncalibrated)


def subject_of(watchlist_dir: Path, subject_id: str) -> Subject | None:
    """The subject as enrolled (removed ones included, so an erased subject says so); None if unknown."""
    try:
        with Watchlist.open(watchlist_dir) as wl:
            for subject in wl.subjects(include_removed=True):
                if subject.subject_id == subject_id:
                    return subject
    except StreamprocError:
        return None
    return None


def enrolment_chips(watchlist_dir: Path, subject_id: str) -> list[tuple[int, NDArray[np.uint8]]]:
    """The subject's stored enrolment chips ``(template_label, RGB uint8 HxWx3)``; none for a removed subject."""
    try:
        with Watchlist.open(watchlist_dir) as wl:
            return wl.enrolment_chips(subject_id)
    except StreamprocError:
        return []


def jpeg(chip: NDArray[np.uint8]) -> bytes:
    """JPEG bytes of an RGB uint8 chip (OpenCV encodes BGR, hence the flip)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(chip[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf)


__all__ = ["Explained", "day", "enrolment_chips", "explain", "jpeg", "one_in", "subject_of", "utc"]
