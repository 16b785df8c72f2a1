"""Video sources: decode a file, a folder of clips, or an RTSP/HTTP URL into :class:`~streamproc.types.Frame`.

Frames are ``(H, W, 3)`` uint8 **BGR** (PyAV ``bgr24``, the order the detector takes). Timing:

- ``pts_s`` is media time in seconds from the first decoded frame (exact: computed from the integer pts and the
  stream's time base). For a **folder**, media time runs on across files: each file starts where the previous
  one ended (its last pts plus one frame duration), so ``pts_s`` is monotonic for the whole stream and the
  tracker's and best-shot windows never see time jump backwards at a file boundary.
- ``captured_at`` is the wall-clock time (``clock()``) at which the frame became available, after any realtime
  pacing: end-to-end latency is measured from it.
- ``index`` counts emitted frames (after ``max_fps`` sampling) from 0 across the whole source.

Errors: anything that stops a source from producing frames at all is a one-line :class:`SourceError` naming
it. Damage *within* a file (a truncated copy, corrupt packets) ends that file early with a logged warning,
counted in :attr:`VideoSource.errors` and reported to ``on_error``; the frames decoded before it are kept and
a folder goes on with its next file. URL credentials are masked in messages, logs and ``Frame.source``.

:class:`SourceReader` runs a source on its own thread into a :class:`~streamproc.buffer.FrameBuffer`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit, urlunsplit

import av
from av.container import InputContainer
from av.error import FFmpegError
from av.video.stream import VideoStream

from streamproc.buffer import BufferClosed, BufferPolicy, FrameBuffer
from streamproc.config import SourceConfig
from streamproc.errors import SourceError
from streamproc.types import Frame, ImageBGR

log = logging.getLogger(__name__)

SourceKind = Literal["file", "folder", "url"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts"})
"""Files a folder source picks up (compared case-insensitively)."""

FALLBACK_FPS = 30.0
"""Frame rate assumed for timing only when a stream has neither timestamps nor a declared rate."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EPS_S = 1e-6  # timestamps equal within this are equal (float rounding of exact rational times)


def source_kind(url: str) -> SourceKind:
    """``url`` for anything with a ``scheme://`` prefix, ``folder`` for an existing directory, else ``file``."""
    if _URL.match(url):
        return "url"
    return "folder" if Path(url).is_dir() else "file"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs, metrics and events."""
    if not _URL.match(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def folder_videos(folder: Path) -> list[Path]:
    """Video files directly in ``folder`` (see :data:`VIDEO_EXTENSIONS`), sorted by name; hidden files skipped."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


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


def _one_line(err: FFmpegError) -> str:
    text = err.strerror or str(err)
    return " ".join(text.split())


class VideoSource:
    """Decodes one configured source into :class:`Frame` s; see the module docstring for timing and errors.

    Construction checks what is cheap to check (a path exists, a folder holds video files) and raises
    :class:`SourceError`; opening and decoding happen lazily in :meth:`frames`. ``clock`` stamps
    ``captured_at`` (tests pass a fake one). ``on_error(message)`` is called, from the decoding thread, for
    every file skipped or cut short; :attr:`errors` counts them.
    """

    def __init__(
        self,
        config: SourceConfig,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_error = on_error
        self._kind = source_kind(config.url)
        self._name = redact_url(config.url)
        self._stop = threading.Event()
        self.errors = 0
        """Files skipped or cut short by decoding errors (in the latest :meth:`frames` pass)."""
        self.decoded = 0
        """Frames out of the decoder, before ``max_fps`` sampling (in the latest :meth:`frames` pass)."""
        self.emitted = 0
        """Frames handed out by :meth:`frames` (in the latest pass)."""
        if self._kind == "folder":
            self._folder_files()
        elif self._kind == "file" and not Path(config.url).exists():
            raise SourceError(f"{config.url}: no such file or folder")

    @property
    def config(self) -> SourceConfig:
        return self._config

    @property
    def kind(self) -> SourceKind:
        return self._kind

    @property
    def buffer_policy(self) -> BufferPolicy:
        """The configured policy, with ``auto`` resolved: ``wait`` for files and folders, ``drop_oldest`` for URLs."""
        if self._config.buffer != "auto":
            return self._config.buffer
        return "drop_oldest" if self._kind == "url" else "wait"

    def stop(self) -> None:
        """Make :meth:`frames` end at the next frame (thread-safe; also cuts a realtime-pacing sleep short)."""
        self._stop.set()

    def frames(self) -> Generator[Frame, None, None]:
        """Decode the whole source, yielding sampled frames; raises :class:`SourceError` (see module docs)."""
        self.errors = self.decoded = self.emitted = 0
        state = _Timeline(RateSampler(self._config.max_fps))
        if self._kind == "url":
            yield from self._decode(self._open_url(), self._name, state, live=True)
        elif self._kind == "file":
            yield from self._decode(self._open_file(Path(self._config.url)), self._config.url, state, live=False)
            if self.emitted == 0 and self.errors > 0 and not self._stop.is_set():
                raise SourceError(f"{self._config.url}: no frame could be decoded")
        else:
            files = self._folder_files()
            for path in files:
                if self._stop.is_set():
                    return
                try:
                    container = self._open_file(path)
                except SourceError as err:
                    self._record_error(f"skipped {err}")
                    continue
                yield from self._decode(container, str(path), state, live=False)
            if self.emitted == 0 and self.errors > 0 and not self._stop.is_set():
                raise SourceError(f"{self._config.url}: none of its {len(files)} video files could be decoded")

    # ------------------------------------------------------------------------------------------ internals
    def _folder_files(self) -> list[Path]:
        folder = Path(self._config.url)
        try:
            files = folder_videos(folder)
        except OSError as err:
            raise SourceError(f"{folder}: cannot list folder: {err.strerror}") from None
        if not files:
            exts = ", ".join(sorted(VIDEO_EXTENSIONS))
            raise SourceError(f"{folder}: folder has no video files ({exts})")
        return files

    def _open_file(self, path: Path) -> InputContainer:
        try:
            container = av.open(str(path))
        except av.error.FileNotFoundError:
            raise SourceError(f"{path}: no such file or folder") from None
        except av.error.InvalidDataError:
            raise SourceError(f"{path}: not a video file, or its header is corrupt or missing") from None
        except av.error.FFmpegError as err:
            raise SourceError(f"{path}: cannot open: {_one_line(err)}") from None
        return self._checked(container, str(path))

    def _open_url(self) -> InputContainer:
        url, name, timeout = self._config.url, self._name, self._config.open_timeout_s
        options = {"rtsp_transport": "tcp"} if url.lower().startswith(("rtsp://", "rtsps://")) else {}
        # (open, read) timeouts: a URL that never answers, or a camera that stalls mid-stream, fails instead of
        # hanging; SourceConfig has no separate read timeout, so the open timeout serves for both.
        start = time.monotonic()
        try:
            container = av.open(url, options=options, timeout=(timeout, timeout))
        except av.error.FFmpegError as err:
            # The timeout surfaces as ExitError, or (RTSP) as InvalidDataError: tell the user what happened.
            if isinstance(err, av.error.ExitError) or time.monotonic() - start >= 0.95 * timeout:
                raise SourceError(f"{name}: no answer within {timeout:g} s") from None
            raise SourceError(f"{name}: cannot open: {_one_line(err)}") from None
        return self._checked(container, name)

    @staticmethod
    def _checked(container: InputContainer, name: str) -> InputContainer:
        if not container.streams.video:
            container.close()
            raise SourceError(f"{name}: has no video stream")
        return container

    def _record_error(self, message: str) -> None:
        self.errors += 1
        log.warning("%s", message)
        if self._on_error is not None:
            self._on_error(message)

    def _decode(self, container: InputContainer, name: str, state: _Timeline, live: bool) -> Iterator[Frame]:
        """Yield one container's sampled frames, advancing ``state`` (shared across a folder's files)."""
        with container:
            stream = container.streams.video[0]
            # Frame threading is fastest for files but holds back one frame per thread; live sources use
            # slice threading so latency stays at one frame.
            stream.thread_type = "SLICE" if live else "AUTO"
            clock = _FileClock(stream)
            pace = self._config.realtime and not live
            try:
                for vframe in container.decode(stream):
                    if self._stop.is_set():
                        return
                    self.decoded += 1
                    pts_s = state.offset + clock.relative(vframe.pts, vframe.duration)
                    if not state.sampler.keep(pts_s):
                        continue
                    image = cast(ImageBGR, vframe.to_ndarray(format="bgr24"))
                    if pace and not self._wait_until(state, pts_s):
                        return
                    yield Frame(
                        stream_id=self._config.id,
                        index=self.emitted,
                        pts_s=pts_s,
                        captured_at=self._clock(),
                        image=image,
                        source=name,
                    )
                    self.emitted += 1
            except FFmpegError as err:
                if not live:
                    self._record_error(f"{name}: decoding stopped after {clock.count} frames: {_one_line(err)}")
                elif isinstance(err, av.error.ExitError):
                    raise SourceError(f"{name}: no data for {self._config.open_timeout_s:g} s") from None
                else:
                    raise SourceError(f"{name}: stream failed after {clock.count} frames: {_one_line(err)}") from None
            finally:
                state.offset += clock.span

    def _wait_until(self, state: _Timeline, pts_s: float) -> bool:
        """Realtime pacing: sleep until the frame's time on a monotonic clock; False when stopped meanwhile."""
        now = time.monotonic()
        if state.start is None:
            state.start = now - pts_s
            return True
        delay = state.start + pts_s - now
        return not (delay > 0 and self._stop.wait(delay))


class _Timeline:
    """Timing state of one :meth:`VideoSource.frames` pass, shared by the files of a folder."""

    def __init__(self, sampler: RateSampler) -> None:
        self.sampler = sampler
        self.offset = 0.0  # media time at which the current file starts
        self.start: float | None = None  # monotonic time of media time 0, for realtime pacing


class _FileClock:
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
                self._first_pts = pts
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


class SourceReader:
    """Runs :meth:`VideoSource.frames` on a daemon thread into a :class:`FrameBuffer`.

    Create the buffer with ``source.buffer_policy`` (and its ``on_drop`` for a dropped-frames metric).
    ``on_frame(frame)`` runs on the decode thread for each frame before it is queued (a decoded-frames metric).
    When the source ends, the buffer is closed; when it raises (e.g. :class:`SourceError`), the exception
    reaches the consumer through :meth:`FrameBuffer.fail`, after the frames already queued.
    """

    def __init__(
        self,
        source: VideoSource,
        buffer: FrameBuffer[Frame],
        on_frame: Callable[[Frame], None] | None = None,
        name: str | None = None,
    ) -> None:
        self._source = source
        self._buffer = buffer
        self._on_frame = on_frame
        self._decoded = 0
        self._thread = threading.Thread(target=self._run, name=name or f"decode-{source.config.id}", daemon=True)

    @property
    def source(self) -> VideoSource:
        return self._source

    @property
    def buffer(self) -> FrameBuffer[Frame]:
        return self._buffer

    @property
    def decoded(self) -> int:
        """Frames taken from the source (after ``max_fps`` sampling), whether or not later dropped."""
        return self._decoded

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end now; returns at once.

        Closes the buffer, which wakes a ``put`` blocked on a full ``wait`` buffer; consumers still drain the
        frames queued so far. A read blocked on a silent URL ends within the source's read timeout.
        """
        self._source.stop()
        self._buffer.close()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            with contextlib.closing(self._source.frames()) as frames:
                for frame in frames:
                    self._decoded += 1
                    if self._on_frame is not None:
                        self._on_frame(frame)
                    self._buffer.put(frame)
        except BufferClosed:
            return  # stopped, or the consumer closed the buffer: nobody wants more frames
        except Exception as err:  # noqa: BLE001 - any failure must reach the consumer, which re-raises it
            self._buffer.fail(err)
            return
        self._buffer.close()
