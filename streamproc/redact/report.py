"""What a clerk checks before release: the JSON report and a contact sheet of the *redacted* output.

The contact sheet is drawn from the written file decoded back (never from memory), one thumbnail per second
of media time, with a strip chart of faces hidden per frame underneath (grey bars: frames where a face was
held by interpolation or extension only, i.e. without a detection of its own).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from streamproc.errors import SourceError
from streamproc.fsutil import atomic_write_bytes
from streamproc.redact.plan import Plan
from streamproc.redact.settings import RedactReportConfig
from streamproc.types import ImageBGR

_CHART_HEIGHT = 90
_BG = (32, 32, 32)


def lowest_regions(plan: Plan, times: Sequence[float], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` detected regions with the lowest detector score (where a miss is most likely nearby)."""
    rows = [(r.score, i, r) for i, rs in enumerate(plan.regions) for r in rs if r.kind in ("detected", "fallback")]
    rows.sort(key=lambda row: (row[0], row[1]))
    return [
        {
            "frame": i,
            "time_s": round(times[i], 3),
            "box": [r.x1, r.y1, r.x2, r.y2],
            "score": round(score, 3),
            "kind": r.kind,
            "track_id": r.track_id,
        }
        for score, i, r in rows[:limit]
    ]


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(report, indent=2, sort_keys=False) + "\n").encode())


def _label(image: ImageBGR, text: str) -> None:
    cv2.putText(image, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def thumbnails(path: Path, width: int) -> tuple[list[ImageBGR], int]:
    """One (h, width, 3) BGR thumbnail per second of ``path`` (the first frame at or after each whole second
    since its first frame) and the number of frames decoded."""
    thumbs: list[ImageBGR] = []
    count = 0
    start: float | None = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                start = t if start is None else start
                if t - start >= len(thumbs) - 1e-6:
                    height = max(1, round(frame.height * width / frame.width))
                    thumb = np.ascontiguousarray(frame.to_ndarray(format="bgr24", width=width, height=height), np.uint8)
                    _label(thumb, f"{t - start:6.1f} s")
                    thumbs.append(thumb)
                count += 1
    except av.FFmpegError as err:
        raise SourceError(f"{path}: the written clip does not decode ({str(err).splitlines()[0]})") from None
    return thumbs, count


def contact_sheet(thumbs: Sequence[ImageBGR], faces: Sequence[int], held_only: set[int], columns: int) -> ImageBGR:
    """Thumbnails in rows of ``columns`` above a strip chart of ``faces`` (regions hidden per frame)."""
    tw = thumbs[0].shape[1] if thumbs else 160
    th = thumbs[0].shape[0] if thumbs else 90
    rows = max(1, -(-len(thumbs) // columns))
    sheet = np.full((rows * th + _CHART_HEIGHT + 20, columns * tw, 3), _BG, np.uint8)
    for k, thumb in enumerate(thumbs):
        y, x = (k // columns) * th, (k % columns) * tw
        sheet[y : y + thumb.shape[0], x : x + thumb.shape[1]] = thumb
    top = rows * th + 16
    width = sheet.shape[1]
    peak = max(max(faces, default=0), 1)
    n = max(len(faces), 1)
    for i, count in enumerate(faces):
        x1, x2 = i * width // n, max(i * width // n + 1, (i + 1) * width // n)
        bar = round((_CHART_HEIGHT - 4) * count / peak)
        colour = (150, 150, 150) if i in held_only else (80, 200, 80)
        if bar:
            sheet[top + _CHART_HEIGHT - bar : top + _CHART_HEIGHT, x1:x2] = colour
    cv2.putText(
        sheet,
        f"faces hidden per frame (max {peak}); grey: held without a detection",
        (4, top - 3),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (230, 230, 230),
        1,
        cv2.LINE_AA,
    )
    return sheet


def write_contact_sheet(video: Path, png: Path, plan: Plan, config: RedactReportConfig) -> int:
    """Decode ``video`` back, write the sheet to ``png``; returns the frames decoded (a check on the file)."""
    thumbs, decoded = thumbnails(video, config.thumb_width)
    sheet = contact_sheet(thumbs, plan.faces_per_frame(), set(plan.interpolation_only_frames()), config.columns)
    ok, encoded = cv2.imencode(".png", sheet)
    if not ok:
        raise SourceError(f"cannot encode the contact sheet for {video}")
    atomic_write_bytes(png, encoded.tobytes())
    return decoded
