"""How long a live source waits between reconnect attempts (exponential, capped, jittered)."""

from __future__ import annotations

import random

from streamproc.config import ReconnectConfig


class Backoff:
    """Waits between reconnect attempts: ``initial_s * multiplier**n`` capped at ``max_s``, times a random factor.

    The factor is drawn uniformly from ``[1 - jitter, 1 + jitter]`` so that cameras dropped together (a switch
    reboot) do not all retry in step; ``n`` counts the failed attempts since the last :meth:`reset`, which the
    source calls once frames flow again, so the next outage starts with a short wait.
    """

    def __init__(self, config: ReconnectConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self.attempts = 0
        """Attempts started since the last reset (each :meth:`next_wait` is one)."""

    @property
    def exhausted(self) -> bool:
        """True once ``max_attempts`` attempts have been made in a row (never with ``max_attempts: null``)."""
        limit = self._config.max_attempts
        return limit is not None and self.attempts >= limit

    def next_wait(self) -> float:
        """Seconds to wait before the next attempt, which it counts."""
        c = self._config
        base = min(c.max_s, c.initial_s * c.multiplier**self.attempts)
        self.attempts += 1
        return base * self._rng.uniform(1.0 - c.jitter, 1.0 + c.jitter)

    def reset(self) -> None:
        self.attempts = 0
