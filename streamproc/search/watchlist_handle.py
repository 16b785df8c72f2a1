"""The running pipeline's view of the watchlist: read-only, reopened when another process changes it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from streamproc.search.watchlist import Watchlist
from streamproc.types import EmbedderIdentity

log = logging.getLogger(__name__)


class WatchlistHandle:
    """The current read-only watchlist, reopened when its index version changes (hot reload); thread-safe."""

    def __init__(self, path: Path, embedder_identity: EmbedderIdentity, reload_s: float) -> None:
        self._path = path
        self._identity = embedder_identity
        self._reload_s = reload_s
        self._lock = threading.Lock()
        self._current = Watchlist.open(path, embedder_identity)
        self._version = self._current.index_version()
        self._checked = time.monotonic()

    def get(self) -> Watchlist:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._reload_s:
                self._checked = now
                version = self._current.index_version()
                if version != self._version:
                    fresh = Watchlist.open(self._path, self._identity)
                    old, self._current, self._version = self._current, fresh, fresh.index_version()
                    old.close()
                    log.info("watchlist %s reloaded (%d subjects)", self._path, len(fresh))
            return self._current

    def close(self) -> None:
        with self._lock:
            self._current.close()
