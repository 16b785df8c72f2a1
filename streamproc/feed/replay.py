"""Replay endpoint: a subscriber that was away asks for the journaled events (matches and decisions) it missed.

Protocol (ZeroMQ; the server binds a ROUTER socket, clients connect REQ or DEALER):

- request ``[b"since", b"<seq>"]`` or ``[b"since", b"<seq>", b"<limit>"]``: ASCII decimal integers,
  ``seq >= 0`` (0 means from the start), ``1 <= limit``;
- reply ``[b"events", json1, json2, ...]``: the journaled events with ``seq`` greater than the one asked for,
  in seq order, each body exactly as stored (the JSON of a :class:`~streamproc.feed.schema.MatchEvent` or, with
  ``"type": "review"``, a :class:`~streamproc.feed.schema.ReviewEvent`; ``seq`` set). Matches and decisions share
  one seq sequence, so a client tells them apart by ``type``.
  A reply holds at most ``limit``, :data:`MAX_BATCH` events, and about :data:`MAX_REPLY_BYTES` (always at least
  one event), so the client asks again from the last seq it got until a reply has no events;
- error ``[b"error", b"<one-line message>"]`` for a malformed request or an unreadable journal.

Events that retention or erasure deleted are not returned: seqs may have holes, and an old ``since`` starts at
the oldest event still kept. A DEALER client may send the empty delimiter frame or not; the reply carries the
same envelope back.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Final, Self

import zmq

from streamproc.errors import StreamprocError
from streamproc.feed.codec import EventEndpointError, decode_body
from streamproc.feed.journal import EventJournal, JournalError
from streamproc.feed.schema import FeedEvent

MAX_BATCH: Final = 1000
"""Most events in one reply."""

MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
"""A reply stops growing past this many body bytes (face crops make events large)."""

_POLL_MS: Final = 50


class ReplayError(StreamprocError):
    """The replay endpoint did not answer, answered with an error, or sent something malformed."""


class ReplayUnreachableError(ReplayError):
    """No reply within the timeout: the server is down or restarting (worth asking again later)."""


def _parse_request(frames: list[bytes]) -> tuple[int, int]:
    """``(seq, limit)`` from a request body; ValueError with a one-line reason otherwise."""
    if not frames or frames[0] != b"since":
        verb = frames[0][:20] if frames else b""
        raise ValueError(f"unknown request {verb!r}: expected [b'since', b'<seq>'(, b'<limit>')]")
    if len(frames) not in (2, 3):
        raise ValueError(f"'since' takes 1 or 2 arguments (seq, limit), got {len(frames) - 1}")
    numbers: list[int] = []
    for name, raw in zip(("seq", "limit"), frames[1:], strict=False):
        text = raw[:30].decode("ascii", errors="replace")
        if not raw.isdigit() or len(raw) > 19:
            raise ValueError(f"{name} must be a non-negative decimal integer, got {text!r}")
        numbers.append(int(raw))
    seq = numbers[0]
    limit = numbers[1] if len(numbers) == 2 else MAX_BATCH
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return seq, min(limit, MAX_BATCH)


class ReplayServer:
    """Serves journaled events after a seq on a ROUTER socket, from a background thread.

    ``endpoint`` may ask for any port (``tcp://127.0.0.1:*``); :attr:`endpoint` is the bound address.
    ``on_request`` is called once per request received (the pipeline counts them in a metric); it runs on the
    server thread and must not raise. ``socket_setup`` is applied to the socket before binding (e.g. CURVE).
    """

    def __init__(
        self,
        journal: EventJournal,
        endpoint: str,
        on_request: Callable[[], None] | None = None,
        context: zmq.SyncContext | None = None,
        socket_setup: Callable[[zmq.SyncSocket], None] | None = None,
    ) -> None:
        self.journal = journal
        self._on_request = on_request
        self._own_context = context is None
        self._context: zmq.SyncContext = zmq.Context() if context is None else context
        self._socket: zmq.SyncSocket = self._context.socket(zmq.ROUTER)
        self._stop = threading.Event()
        self._closed = False
        self.requests = 0
        """Requests received, errors included."""
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            if socket_setup is not None:
                socket_setup(self._socket)
            self._socket.bind(endpoint)
        except zmq.ZMQError as err:
            self._socket.close(linger=0)
            if self._own_context:
                self._context.term()
            self._closed = True
            raise EventEndpointError(f"cannot bind replay endpoint {endpoint!r}: {err.strerror}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        """The bound address, with the actual port when ``endpoint`` asked for any."""
        # The socket is used only by this thread from here on (ZeroMQ sockets are not thread-safe).
        self._thread = threading.Thread(target=self._serve, name="streamproc-replay", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._socket.poll(_POLL_MS, zmq.POLLIN):
                    continue
                try:
                    frames = self._socket.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self._socket.send_multipart(self._answer(frames))
        finally:
            self._socket.close(linger=0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        """The whole reply message, routing envelope included, for one received message."""
        # ROUTER prepends the peer identity; REQ (and some DEALERs) add an empty delimiter after it.
        split = frames.index(b"", 1) + 1 if b"" in frames[1:] else 1
        envelope, body = frames[:split], frames[split:]
        self.requests += 1
        if self._on_request is not None:
            self._on_request()
        try:
            seq, limit = _parse_request(body)
        except ValueError as err:
            return [*envelope, b"error", str(err).encode("utf-8")]
        try:
            rows = self.journal.bodies_since(seq, limit)
        except JournalError as err:
            return [*envelope, b"error", str(err).encode("utf-8")]
        reply: list[bytes] = []
        size = 0
        for _, blob in rows:
            if reply and size + len(blob) > MAX_REPLY_BYTES:
                break
            reply.append(blob)
            size += len(blob)
        return [*envelope, b"events", *reply]

    def close(self) -> None:
        """Stop the thread (within about 50 ms) and close the socket; the journal stays open."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def iter_since(
    endpoint: str,
    seq: int,
    timeout_s: float,
    context: zmq.SyncContext | None = None,
    socket_setup: Callable[[zmq.SyncSocket], None] | None = None,
) -> Iterator[list[FeedEvent]]:
    """Batches of the match and review events after ``seq``, in seq order, until the server has no more.

    ``timeout_s`` bounds the wait for each reply; no reply in time raises :class:`ReplayUnreachableError` (a REQ socket
    cannot be reused after a lost reply, so the caller starts over). A malformed event raises
    :class:`~streamproc.feed.codec.EventFormatError`.
    """
    own_context = context is None
    ctx: zmq.SyncContext = zmq.Context() if context is None else context
    sock: zmq.SyncSocket = ctx.socket(zmq.REQ)
    try:
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, max(1, math.ceil(timeout_s * 1000)))
            if socket_setup is not None:
                socket_setup(sock)
            sock.connect(endpoint)
        except zmq.ZMQError as err:
            raise ReplayError(f"cannot connect to replay endpoint {endpoint!r}: {err.strerror}") from None
        after = seq
        while True:
            sock.send_multipart([b"since", str(after).encode("ascii")])
            try:
                reply = sock.recv_multipart()
            except zmq.Again:
                message = f"no reply from replay endpoint {endpoint} within {timeout_s:g} s"
                raise ReplayUnreachableError(message) from None
            if not reply or reply[0] not in (b"events", b"error"):
                raise ReplayError(f"malformed reply from replay endpoint {endpoint}")
            if reply[0] == b"error":
                message = b" ".join(reply[1:2]).decode("utf-8", errors="replace").replace("\n", " ")[:300]
                raise ReplayError(f"replay endpoint {endpoint} refused: {message}")
            batch = [decode_body(body) for body in reply[1:]]
            if not batch:
                return
            for event in batch:
                if event.seq is None or event.seq <= after:
                    raise ReplayError(f"replay endpoint {endpoint} sent seq {event.seq} after {after}: out of order")
                after = event.seq
            yield batch
    finally:
        sock.close(linger=0)
        if own_context:
            ctx.term()


def fetch_since(endpoint: str, seq: int, timeout_s: float) -> list[FeedEvent]:
    """Every journaled match and review event after ``seq``, in seq order (see :func:`iter_since`)."""
    events: list[FeedEvent] = []
    for batch in iter_since(endpoint, seq, timeout_s):
        events.extend(batch)
    return events


__all__ = [
    "MAX_BATCH",
    "MAX_REPLY_BYTES",
    "ReplayError",
    "ReplayServer",
    "ReplayUnreachableError",
    "fetch_since",
    "iter_since",
]
