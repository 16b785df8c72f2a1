"""``streamproc run``'s progress, per stream, in every process layout.

Frames done are read from the run's metrics registry (``streamproc_frames_processed_total``, summed over the
child processes in the multi-process layout), so both layouts show the same thing. A file or folder that does not
loop has a known total (the frame counts its files declare, or duration x frame rate, thinned by ``max_fps``):
it shows frames done / total, fps and time left; a URL or a looped source shows frames and fps. On a terminal
this is a live rich display on stderr; otherwise (a log file, a pipe, a service) one plain line every
``every_s`` seconds (``run --progress-every``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import av
from av.error import FFmpegError
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from streamproc.config import SourceConfig
from streamproc.stream.source import folder_videos, source_kind

DEFAULT_EVERY_S = 30.0
"""Seconds between two progress lines when stderr is not a terminal."""
REFRESH_S = 0.5
MAX_PROBED_FILES = 1000
"""A folder with more video files than this shows frames and fps only (probing each would delay the start)."""
_PROCESSED = "streamproc_frames_processed_total"


def expected_frames(source: SourceConfig) -> int | None:
    """Frames the stream will process, when knowable before it runs; None for a URL, a looped source, a folder
    too large to probe, or a file that declares neither a frame count nor a duration."""
    kind = source_kind(source.url)
    if source.loop or kind == "url":
        return None
    try:
        paths = folder_videos(Path(source.url)) if kind == "folder" else [Path(source.url)]
    except OSError:
        return None
    if not paths or len(paths) > MAX_PROBED_FILES:
        return None
    total = 0
    for path in paths:
        frames = _file_frames(path, source.max_fps)
        if frames is None:
            return None
        total += frames
    return total


def _file_frames(path: Path, max_fps: float | None) -> int | None:
    """A file's declared frames, or duration x average rate; at most duration x ``max_fps`` when sampled."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 0)
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
            frames = stream.frames or round(seconds * rate)
    except (FFmpegError, IndexError, OSError):
        return None
    if frames <= 0:
        return None
    if max_fps is not None and rate > max_fps and seconds > 0:
        frames = min(frames, math.ceil(seconds * max_fps))
    return int(frames)


def frames_done(registry: CollectorRegistry) -> dict[str, int]:
    """Frames processed so far per stream (every process of the run summed)."""
    done: dict[str, int] = {}
    for family in registry.collect():
        for sample in family.samples:
            stream = sample.labels.get("stream")
            if sample.name == _PROCESSED and stream is not None:
                done[stream] = done.get(stream, 0) + int(sample.value)
    return done


class _FpsColumn(ProgressColumn):
    """Processed frames per second (rich's speed estimate over the last 30 s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("   - fps" if speed is None else f"{speed:6.1f} fps", style="progress.data.speed")


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class RunProgress:
    """Reports the run's progress from ``registry`` on a thread while the run goes on (a context manager).

    ``enabled`` False (``--quiet``) shows nothing. The totals are probed once, at construction."""

    def __init__(
        self,
        registry: CollectorRegistry,
        sources: Sequence[SourceConfig],
        console: Console,
        enabled: bool = True,
        every_s: float = DEFAULT_EVERY_S,
    ) -> None:
        self._registry = registry
        self._console = console
        self._enabled = enabled
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._totals = {s.id: expected_frames(s) for s in sources} if enabled else {}
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            TaskProgressColumn(),
            _FpsColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            auto_refresh=False,
        )
        self._tasks = {s.id: self._progress.add_task(s.id, total=self._totals.get(s.id)) for s in sources}
        self._last: tuple[float, dict[str, int]] = (time.monotonic(), {})

    def __enter__(self) -> RunProgress:
        if self._enabled:
            if self._console.is_terminal:
                self._progress.start()
            self._last = (time.monotonic(), frames_done(self._registry))
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._enabled:
            return
        self._stop.set()
        self._thread.join()
        self._update()
        if self._console.is_terminal:
            self._progress.refresh()
            self._progress.stop()

    def _loop(self) -> None:
        next_line = time.monotonic() + self._every_s
        while not self._stop.wait(REFRESH_S):
            done = self._update()
            if self._console.is_terminal:
                self._progress.refresh()
            elif time.monotonic() >= next_line:
                next_line += self._every_s
                self._console.print(self.line(done), highlight=False, markup=False, soft_wrap=True)

    def _update(self) -> dict[str, int]:
        done = frames_done(self._registry)
        for sid, task in self._tasks.items():
            n = done.get(sid, 0)
            total = self._totals.get(sid)
            if total is not None and n > total:  # an estimate from duration x rate: never show 110 %
                self._progress.update(task, total=n)
            self._progress.update(task, completed=n)
        return done

    def line(self, done: dict[str, int]) -> str:
        """One plain progress line for every stream, fps over the time since the previous line."""
        now = time.monotonic()
        then, before = self._last
        self._last = (now, done)
        parts = []
        for sid in self._tasks:
            n = done.get(sid, 0)
            fps = (n - before.get(sid, 0)) / max(now - then, 1e-6)
            total = self._totals.get(sid)
            if total is None:
                parts.append(f"{sid} {n} frames, {fps:.1f} fps")
                continue
            total = max(total, n)
            left = ", done" if n == total else f", {_clock((total - n) / fps)} left" if fps > 0 else ""
            parts.append(f"{sid} {n}/{total} frames ({100 * n / total:.0f}%), {fps:.1f} fps{left}")
        return "progress: " + "; ".join(parts)
