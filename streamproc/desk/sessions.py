"""Console sessions and login throttling, in memory: a restart of the console signs everyone out.

A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie, mapped here to the account id, its
CSRF token (a second random value every form carries back) and the time of its last request; it ends after the
idle timeout, at logout, or when the account is disabled (the console re-checks the account on every request).
The candidates whose page a session has opened (and so audited) are remembered: their face images are served
to that session only, so no face leaves the console without an audit record naming who looked.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

LOGIN_WINDOW_S: Final = 60.0
LOGIN_ATTEMPTS: Final = 10
"""Login attempts allowed per client address in any :data:`LOGIN_WINDOW_S`; more get 429 without a password check."""


@dataclass
class Session:
    """One signed-in browser."""

    token: str
    reviewer_id: str
    csrf: str
    last_seen: float
    viewed: set[str] = field(default_factory=set)


class SessionStore:
    """Live sessions by token; thread-safe."""

    def __init__(self, idle_timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._idle = idle_timeout_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, reviewer_id: str) -> Session:
        """A fresh session (a new token at every login: no session fixation)."""
        session = Session(secrets.token_urlsafe(32), reviewer_id, secrets.token_urlsafe(32), self._clock())
        with self._lock:
            self._expire()
            self._sessions[session.token] = session
        return session

    def touch(self, token: str | None) -> Session | None:
        """The live session for ``token``, its idle clock restarted; None when unknown or idle too long."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_seen > self._idle:
                del self._sessions[token]
                return None
            session.last_seen = now
            return session

    def drop(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if now - s.last_seen > self._idle]:
            del self._sessions[token]


class LoginThrottle:
    """At most :data:`LOGIN_ATTEMPTS` login attempts per client address per :data:`LOGIN_WINDOW_S` (sliding)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Count an attempt from ``client``; False when it is over the limit (the attempt is not made)."""
        now = self._clock()
        with self._lock:
            times = self._attempts.setdefault(client, deque())
            while times and now - times[0] > LOGIN_WINDOW_S:
                times.popleft()
            if len(times) >= LOGIN_ATTEMPTS:
                return False
            times.append(now)
            return True


__all__ = ["LOGIN_ATTEMPTS", "LOGIN_WINDOW_S", "LoginThrottle", "Session", "SessionStore"]
