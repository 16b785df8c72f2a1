"""The decode thread: runs a :class:`~streamproc.stream.source.VideoSource` into a bounded frame buffer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from streamproc.stream.buffer import BufferClosed, FrameBuffer
from streamproc.stream.source import VideoSource
from streamproc.types import Frame


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
