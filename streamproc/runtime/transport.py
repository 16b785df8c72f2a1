"""ZeroMQ between stream workers (PUSH, one socket per stream) and the embed service (PULL, bound).

Every queue is bounded: a worker's socket holds at most ``hwm`` messages for the service (``SNDHWM``), the
service's at most ``hwm`` per connected stream (``RCVHWM``). When full, a file stream waits (nothing lost) and a
live stream drops the message, which the front counts per stream. PUSH keeps one stream's messages in order;
ZeroMQ reconnects by itself when the service restarts.

The channel carries the face of everyone in view, so beyond one host it should be encrypted: with
``scale.curve`` both ends use CURVE (:mod:`streamproc.feed.security`) and the service accepts only workers whose public
key it holds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import zmq

from streamproc.config import ScaleConfig
from streamproc.errors import ConfigError, StreamprocError
from streamproc.feed.security import ClientSecurity, ServerSecurity, secure_client, secure_server
from streamproc.messages import Message
from streamproc.runtime.wire import WireError, decode, encode

log = logging.getLogger(__name__)

LINGER_MS = 5000
"""How long a closing worker socket keeps trying to deliver what it still holds (a draining worker's last shots)."""


@contextlib.contextmanager
def _closed_on_failure(socket: zmq.SyncSocket, what: str) -> Iterator[None]:
    """Set-up of a socket: on any failure close it at once; a ZeroMQ error becomes one line naming ``what``."""
    try:
        yield
    except BaseException as err:
        socket.close(linger=0)
        if isinstance(err, zmq.ZMQError):
            raise StreamprocError(f"{what}: {err.strerror}") from None
        raise


class ZmqShotSink:
    """A stream's PUSH socket to the embed service. Not thread-safe: one per stream thread."""

    def __init__(
        self,
        context: zmq.SyncContext,
        endpoint: str,
        hwm: int,
        stop: threading.Event,
        security: ClientSecurity | None = None,
    ) -> None:
        self._stop = stop
        self._socket: zmq.SyncSocket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, LINGER_MS)
        self._socket.setsockopt(zmq.SNDTIMEO, 200)
        with _closed_on_failure(self._socket, f"scale.embed_endpoint {endpoint}"):
            if security is not None:
                secure_client(self._socket, security)
            self._socket.connect(endpoint)

    def send(self, message: Message, block: bool) -> bool:
        frames = encode(message)
        if not block:
            try:
                self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return False
            return True
        while True:  # wait for room, but give up when the worker is told to stop
            try:
                self._socket.send_multipart(frames, copy=False)
            except zmq.Again:
                if self._stop.is_set():
                    return False
                continue
            return True

    def close(self, linger_ms: int = LINGER_MS) -> None:
        """Close, trying up to ``linger_ms`` to deliver what is still queued (a draining worker's last shots)."""
        self._socket.close(linger=linger_ms)


class ZmqInbox:
    """The embed service's bound PULL socket; malformed messages are logged, counted and skipped."""

    def __init__(
        self,
        context: zmq.SyncContext,
        endpoint: str,
        hwm: int,
        on_bad_message: Callable[[], None] | None = None,
        drain_idle_s: float = 0.5,
        security: ServerSecurity | None = None,
    ) -> None:
        """With ``security``, an :class:`~streamproc.feed.security.Authenticator` must run on ``context`` first."""
        self._socket: zmq.SyncSocket = context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        with _closed_on_failure(self._socket, f"cannot bind scale.embed_endpoint {endpoint}"):
            if security is not None:
                secure_server(self._socket, security)
            self._socket.bind(endpoint)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._on_bad = on_bad_message
        self._drain_idle_s = drain_idle_s
        self._idle_since: float | None = None

    def get(self, timeout_s: float) -> Message | None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(remaining_ms):
                if self._idle_since is None:
                    self._idle_since = time.monotonic()
                return None
            self._idle_since = None
            frames = self._socket.recv_multipart()
            try:
                return decode(frames)
            except WireError as err:
                log.warning("embed service: dropped a malformed message: %s", err)
                if self._on_bad is not None:
                    self._on_bad()
                if time.monotonic() >= deadline:
                    return None

    def depth(self) -> int:
        return 0  # libzmq does not expose its queue length; the HWM bounds it

    def finished(self, stopping: bool) -> bool:
        """When stopping: once nothing has arrived for ``drain_idle_s`` (workers have delivered their last shots)."""
        return stopping and self._idle_since is not None and time.monotonic() - self._idle_since >= self._drain_idle_s

    def close(self) -> None:
        self._socket.close(linger=0)


def chip_server_security(config: ScaleConfig) -> ServerSecurity | None:
    """The embed service's CURVE settings, or None (plain); one-line error when half configured."""
    curve = config.curve
    if curve is None:
        return None
    if curve.server_secret_key is None or curve.allowed_clients_dir is None:
        raise ConfigError("scale.curve: the embed service needs server_secret_key and allowed_clients_dir")
    return ServerSecurity(curve.server_secret_key, curve.allowed_clients_dir)


def chip_client_security(config: ScaleConfig) -> ClientSecurity | None:
    """A worker's CURVE settings, or None (plain); one-line error when half configured."""
    curve = config.curve
    if curve is None:
        return None
    if curve.client_secret_key is None or curve.server_public_key is None:
        raise ConfigError("scale.curve: workers need client_secret_key and server_public_key")
    return ClientSecurity(curve.client_secret_key, curve.server_public_key)
