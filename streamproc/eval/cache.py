"""An on-disk cache of evaluation embeddings, keyed by model + detection settings + image file hash.

Evaluation re-runs (CI, benches) embed the same public images again and again; the key covers everything
that changes the result, so a different model, detector setting or image never reuses a stale vector.
Holds evaluation data only; the pipeline never writes here.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

CACHE_VERSION = "1"


class EmbeddingCache:
    """``(setting_key, file_sha256) -> vector | None`` (None: no face was found)."""

    def __init__(self, path: Path, setting_key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Evaluations run side by side share one cache (one per user): wait for another writer's transaction
        # instead of failing after sqlite's default 5 s.
        self._db = sqlite3.connect(path, timeout=120)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (setting TEXT NOT NULL, file_sha256 TEXT NOT NULL, "
            "vector BLOB, PRIMARY KEY (setting, file_sha256))"
        )
        self._key = hashlib.sha256(f"{CACHE_VERSION}|{setting_key}".encode()).hexdigest()

    def get(self, file_sha: str) -> tuple[bool, NDArray[np.float32] | None]:
        """(hit, vector); a hit with None vector means the image had no usable face."""
        row = self._db.execute(
            "SELECT vector FROM embeddings WHERE setting = ? AND file_sha256 = ?", (self._key, file_sha)
        ).fetchone()
        if row is None:
            return False, None
        return True, None if row[0] is None else np.frombuffer(row[0], dtype="<f4").copy()

    def put(self, file_sha: str, vector: NDArray[np.float32] | None) -> None:
        blob = None if vector is None else np.asarray(vector, dtype="<f4").tobytes()
        self._db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", (self._key, file_sha, blob))

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
