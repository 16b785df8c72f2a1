"""The ZeroMQ publisher of the event feed (PUB; CURVE-secured when configured).

PUB/SUB drops what is sent before a subscriber's subscription reaches the publisher ("slow joiner"), and a PUB
socket silently drops events for a subscriber whose queue is full (``sndhwm``). The feed is for live review;
an event lost this way is not redelivered, so consumers needing completeness must read the pipeline's journal.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import zmq

from streamproc.errors import StreamprocError
from streamproc.feed.codec import EventEndpointError, encode
from streamproc.feed.schema import FeedEvent
from streamproc.feed.security import Authenticator, ServerSecurity, secure_server


class EventPublisher:
    """Binds a ZeroMQ PUB socket and publishes match (and review) events on it.

    Not thread-safe (ZeroMQ sockets are not): publish from one thread, or behind a lock. PUB never blocks: an
    event for a subscriber whose queue holds ``sndhwm`` messages is dropped by ZeroMQ without notice, and
    events published before a subscriber has connected and subscribed are not delivered to it (slow joiner).
    ``sent`` counts events handed to ZeroMQ, not events delivered.

    With ``security`` the feed is CURVE-encrypted and only clients whose public keys are in
    ``security.allowed_clients_dir`` receive anything. The publisher then starts the context's ZAP
    :class:`~streamproc.feed.security.Authenticator` and stops it in :meth:`close`, unless ``authenticator`` is given:
    one already running on ``context`` and shared with the context's other server sockets (there can be only one
    per context), which the caller keeps and closes.
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.SyncContext | None = None,
        sndhwm: int = 10000,
        *,
        security: ServerSecurity | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        if authenticator is not None and (security is None or context is None or authenticator.context is not context):
            raise ValueError("authenticator needs security and must run on the context given to the publisher")
        self._own_context = context is None
        self._context: zmq.SyncContext = zmq.Context() if context is None else context
        self._socket: zmq.SyncSocket = self._context.socket(zmq.PUB)
        self._authenticator: Authenticator | None = None
        self.sent = 0
        self.dropped = 0
        self._closed = False
        try:
            if security is not None:
                secure_server(self._socket, security)
                if authenticator is None:
                    self._authenticator = Authenticator(self._context, security.allowed_clients_dir)
            self._socket.setsockopt(zmq.SNDHWM, sndhwm)
            self._socket.setsockopt(zmq.LINGER, 1000)
            self._socket.bind(endpoint)
        except zmq.ZMQError as err:
            self.close()
            raise EventEndpointError(f"cannot bind event endpoint {endpoint!r}: {err.strerror}") from None
        except StreamprocError:
            self.close()
            raise
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        """The bound address, with the actual port when ``endpoint`` asked for any (``tcp://host:*``)."""

    def publish(self, event: FeedEvent) -> None:
        """Send one event without blocking."""
        topic, body = encode(event)
        try:
            self._socket.send_multipart([topic, body], flags=zmq.NOBLOCK)
        except zmq.Again:
            # PUB drops silently at its high-water mark; this only happens on sockets configured otherwise.
            self.dropped += 1
            return
        self.sent += 1

    def close(self) -> None:
        """Close the socket, giving queued events up to 1 s to leave."""
        if self._closed:
            return
        self._closed = True
        self._socket.close(linger=1000)
        if self._authenticator is not None:
            # After the socket (no handshake is left waiting on it), before term() (which would wait for it).
            self._authenticator.close()
            self._authenticator = None
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
