"""The event feed a pipeline publishes to: PUB socket, optional durable journal, replay endpoint and CURVE.

Built in one place from ``events`` config so the pipeline only sees ``publish(event)`` and, about every half
second, ``publish_pending_reviews()``. The PUB and replay ROUTER sockets share one ZeroMQ context, so one ZAP
authenticator serves both when CURVE is on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

import zmq

from streamproc.config import EventsConfig
from streamproc.feed.journal import EventJournal, JournaledPublisher
from streamproc.feed.publish import EventPublisher
from streamproc.feed.replay import ReplayServer
from streamproc.feed.schema import MatchEvent, ReviewEvent
from streamproc.feed.security import Authenticator, ServerSecurity, secure_server
from streamproc.metrics import PipelineMetrics

log = logging.getLogger(__name__)

DAY_S = 86400.0


_LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]"})


def is_loopback_endpoint(endpoint: str) -> bool:
    """True when a ZeroMQ endpoint is reachable only from this host (ipc, inproc, tcp on 127.0.0.0/8 or ::1).

    Hostnames other than ``localhost`` and interface names count as reachable from elsewhere (not resolved).
    """
    transport, _, address = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = address.rpartition(":")[0].split(";")[-1]  # tcp://[source;]host:port
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _warn_if_exposed(key: str, bound: str) -> None:
    if not is_loopback_endpoint(bound):
        log.warning(
            "%s %s publishes subject names and face crops to other hosts without encryption; "
            "set events.curve (streamproc keys generate; docs/events.md) or bind 127.0.0.1",
            key,
            bound,
        )


class EventFeed:
    """Publishes match events (journaled first when a journal is configured); thread-safe."""

    def __init__(self, config: EventsConfig, metrics: PipelineMetrics) -> None:
        self._config = config
        self._metrics = metrics
        self._lock = threading.Lock()
        self._context: zmq.SyncContext = zmq.Context()
        self._authenticator: Authenticator | None = None
        self._journal: EventJournal | None = None
        self._replay: ReplayServer | None = None
        self._publisher: EventPublisher | None = None
        self._journaled: JournaledPublisher | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        cfg = self._config
        security = None
        if cfg.curve is not None:
            security = ServerSecurity(cfg.curve.server_secret_key, cfg.curve.allowed_clients_dir)
            self._authenticator = Authenticator(self._context, cfg.curve.allowed_clients_dir)
        self._publisher = EventPublisher(
            cfg.endpoint, context=self._context, security=security, authenticator=self._authenticator
        )
        if security is None:
            _warn_if_exposed("events.endpoint", self._publisher.endpoint)
        if cfg.journal.path is not None:
            self._journal = EventJournal(cfg.journal.path, cfg.journal.sync)
            self._journaled = JournaledPublisher(self._publisher, self._journal, owns=False)
            self.prune()
        if cfg.replay_endpoint is not None and self._journal is not None:

            def setup(sock: zmq.SyncSocket) -> None:
                if security is not None:
                    secure_server(sock, security)

            self._replay = ReplayServer(
                self._journal,
                cfg.replay_endpoint,
                on_request=self._metrics.replay_requests.inc,
                context=self._context,
                socket_setup=setup,
            )
            if security is None:
                _warn_if_exposed("events.replay_endpoint", self._replay.endpoint)

    @property
    def endpoint(self) -> str:
        assert self._publisher is not None
        return self._publisher.endpoint

    @property
    def replay_endpoint(self) -> str | None:
        return self._replay.endpoint if self._replay is not None else None

    def publish(self, event: MatchEvent) -> bool:
        """Journal (if configured) then publish; False when the event id was already journaled (a resend)."""
        with self._lock:
            if self._journaled is not None:
                sent = self._journaled.publish(event)
            else:
                assert self._publisher is not None
                self._publisher.publish(event)
                sent = True
        if self._journal is not None:
            self._metrics.journal_bytes.set(self._journal.size_bytes())
        if not sent:
            self._metrics.events_resent.labels(stream=event.stream_id).inc()
        return sent

    def publish_pending_reviews(self) -> int:
        """Publish reviewers' decisions stored in the journal since the last call; how many were published.

        ``streamproc review decide`` (another process) only stores decisions; this puts them on the feed, under
        ``review.<stream>``. The high-water mark is kept in the journal, not in memory, so the first call after a
        start also publishes the decisions stored while no pipeline ran, and none is published twice except
        after a crash between sending and recording the mark. Without a journal there are no decisions: 0.
        Cheap when there is nothing new (one indexed query); call it from the main loop about every 0.5 s.
        """
        journal = self._journal
        if journal is None:
            return 0
        with self._lock:
            publisher = self._publisher
            assert publisher is not None
            return publish_pending_reviews(journal, publisher.publish)

    def prune(self) -> None:
        """Apply journal retention (age, count); run at start and periodically."""
        journal, cfg = self._journal, self._config.journal
        if journal is None:
            return
        max_age = cfg.max_age_days * DAY_S if cfg.max_age_days is not None else None
        removed = journal.prune(max_age, cfg.max_events)
        if removed:
            log.info("journal retention removed %d event(s)", removed)
        self._metrics.journal_bytes.set(journal.size_bytes())

    def close(self) -> None:
        if self._replay is not None:
            self._replay.close()
        if self._publisher is not None:
            self._publisher.close()
        if self._journal is not None:
            self._journal.close()
        if self._authenticator is not None:
            self._authenticator.close()
        self._context.term()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventSink(Protocol):
    """Takes match events for subscribers (the event feed: journal, then publish)."""

    def publish(self, event: MatchEvent) -> bool:
        """False when the event was already published under its id (a resend): nothing was sent."""
        ...


def awaiting_publication(journal: EventJournal) -> list[ReviewEvent]:
    """Decisions stored but not yet handed to a feed's PUB socket (what the next running pipeline publishes)."""
    return journal.reviews_after(journal.reviews_published(), limit=2**62)


def publish_pending_reviews(journal: EventJournal, send: Callable[[ReviewEvent], None], batch: int = 500) -> int:
    """Send every decision above the journal's ``reviews_published`` mark, in seq order; how many were sent.

    The mark is advanced after each batch is sent, so a crash in between re-sends that batch once at the next
    start (consumers de-duplicate by ``review_id``); nothing stored is skipped.
    """
    sent = 0
    while True:
        pending = journal.reviews_after(journal.reviews_published(), limit=batch)
        if not pending:
            return sent
        for review in pending:
            send(review)
        journal.set_reviews_published(pending[-1].seq or 0)
        sent += len(pending)
