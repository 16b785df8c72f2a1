"""Run one stage of a redaction pass in a background thread, a bounded number of items ahead of its consumer.

Decoding (PyAV), the BGR conversion and OpenCV release the GIL, as does onnxruntime while it detects, so on
2 cores the decode of the next frames overlaps the detector and the encoder instead of waiting for them.
The queue is bounded, so memory stays at ``depth`` frames whatever the clip's length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.1


@dataclass(frozen=True)
class _Item(Generic[T]):
    value: T


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _End:
    pass


def prefetch(items: Iterator[T], depth: int) -> Generator[T, None, None]:
    """Yield what ``items`` yields, in order, produced by a worker thread at most ``depth`` items ahead.

    An exception raised by ``items`` is re-raised here, in the consumer. When the consumer stops early
    (an error of its own, or it closes this generator), the worker stops and closes ``items`` (so a decoder
    releases its file) before this generator returns.
    """
    slots: queue.Queue[_Item[T] | _Failed | _End] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(message: _Item[T] | _Failed | _End) -> bool:
        while not stop.is_set():
            try:
                slots.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        ending: _Failed | _End = _Failed(RuntimeError("the prefetch worker stopped without an answer"))
        try:
            for value in items:
                if not put(_Item(value)):
                    return
            ending = _End()
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            ending = _Failed(err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            put(ending)

    worker = threading.Thread(target=produce, name="redact-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            message = slots.get()
            if isinstance(message, _End):
                return
            if isinstance(message, _Failed):
                raise message.error
            yield message.value
    finally:
        stop.set()
        worker.join()
