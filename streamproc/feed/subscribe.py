"""The ZeroMQ subscriber of the event feed (SUB; CURVE-secured when configured): validated events, or None.

A subscriber sees only what is published after its subscription reached the publisher, and nothing a full queue
dropped (see :mod:`streamproc.feed.publish`); the journal and the replay endpoint fill such gaps.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self

import zmq

from streamproc.errors import StreamprocError
from streamproc.feed.codec import EventEndpointError, EventFormatError, decode
from streamproc.feed.schema import TOPIC_PREFIX, FeedEvent, MatchEvent, ReviewEvent
from streamproc.feed.security import ClientSecurity, secure_client


class EventSubscriber:
    """Connects a ZeroMQ SUB socket to a publisher and yields validated events.

    ``topics`` are byte prefixes: ``match.`` is every stream, ``match.cam2`` is cam2 (and also ``cam20``,
    ``cam2.x``: check ``event.stream_id`` when the exact stream matters); ``review.`` gets reviewers' decisions,
    read with :meth:`recv_any`. Connecting succeeds even when no publisher is there yet; ZeroMQ keeps
    reconnecting in the background.

    With ``security`` the subscriber talks CURVE to the one server whose public key it names. A publisher that
    refuses its key (or a plain publisher) delivers nothing, and ZeroMQ raises no error: :meth:`recv` times out.
    """

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str] = (TOPIC_PREFIX,),
        context: zmq.SyncContext | None = None,
        *,
        security: ClientSecurity | None = None,
    ) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        self._own_context = context is None
        self._context: zmq.SyncContext = zmq.Context() if context is None else context
        self._socket: zmq.SyncSocket = self._context.socket(zmq.SUB)
        self._closed = False
        self.endpoint = endpoint
        try:
            if security is not None:
                secure_client(self._socket, security)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(endpoint)
            for topic in topics:
                self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        except zmq.ZMQError as err:
            self.close()
            raise EventEndpointError(f"cannot connect to event endpoint {endpoint!r}: {err.strerror}") from None
        except StreamprocError:
            self.close()
            raise

    def recv(self, timeout_s: float) -> MatchEvent | None:
        """The next match event, or None after ``timeout_s`` without one.

        For subscribers to ``match.`` topics only (the default): a review event raises
        :class:`EventFormatError` here, so a consumer that expects matches never mistakes a decision for one.
        A malformed message raises :class:`EventFormatError`; it has been consumed, so calling again goes on.
        """
        event = self.recv_any(timeout_s)
        if isinstance(event, ReviewEvent):
            raise EventFormatError(f"review event on {event.topic!r} where a match event was expected: use recv_any()")
        return event

    def recv_any(self, timeout_s: float) -> FeedEvent | None:
        """The next match or review event, or None after ``timeout_s`` without one (errors as :meth:`recv`)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            if self._socket.poll(remaining_ms, zmq.POLLIN):
                try:
                    frames = self._socket.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    continue
                return decode(frames)
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._socket.close(linger=0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def collecting(endpoint: str, poll_s: float = 0.1) -> Iterator[list[MatchEvent]]:
    """Match events from ``endpoint``, appended to the yielded list by a background thread while the block runs.

    What a demo, a bench or a test needs to watch a pipeline it runs in the same process. The subscription takes
    a moment to reach the publisher: wait a little before frames flow, and after the pipeline ends before leaving
    the block, or the first and last events can be missed.
    """
    events: list[MatchEvent] = []
    stop = threading.Event()
    with EventSubscriber(endpoint) as sub:

        def listen() -> None:
            while not stop.is_set():
                event = sub.recv(timeout_s=poll_s)
                if event is not None:
                    events.append(event)

        thread = threading.Thread(target=listen, name="event-collector", daemon=True)
        thread.start()
        try:
            yield events
        finally:
            stop.set()
            thread.join()
