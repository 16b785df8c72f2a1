"""HNSW vector index over hnswlib, with true distances, deletions and checksummed files.

Why a wrapper: hnswlib's raw API has sharp edges that matter for a watchlist —

* its "l2" space returns *squared* distances; ours returns Euclidean distance,
  so thresholds mean the same as the embedder's documentation;
* ``knn_query`` raises when ``k`` exceeds the live count or ``ef`` is too small;
  we clamp ``k`` and raise ``ef`` to at least ``k``;
* deleted elements stay in the graph and in the file; :meth:`HnswIndex.compact`
  rebuilds without them;
* ``load_index`` trusts the file: a flipped byte can crash the process or load a
  silently wrong index. :meth:`HnswIndex.load` verifies the SHA-256 recorded at
  save time and the header's geometry *before* hnswlib sees the file.

Shapes and dtypes: vectors are ``(N, dim)`` float32, labels ``(N,)`` int64
(non-negative; hnswlib stores them as uint64), queries ``(Q, dim)`` float32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, get_args

import hnswlib
import numpy as np
from numpy.typing import ArrayLike, NDArray

from streamproc.errors import WatchlistError
from streamproc.types import Metric

_log = logging.getLogger(__name__)


_HASH_CHUNK: Final = 1 << 20
_DELETED_PROBE_CHUNK: Final = 4096
# hnswlib 0.8 file header (hnswalg.h saveIndex): offsetLevel0, max_elements,
# cur_element_count, size_data_per_element, label_offset, offsetData (size_t),
# maxlevel (int), enterpoint (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t). Little-endian x86-64/arm64.
_HEADER: Final = struct.Struct("<6QiI3QdQ")


@dataclass(frozen=True)
class IndexParams:
    """Index geometry and HNSW knobs.

    ``m`` and ``ef_construction`` fix the graph at build time (they are read back
    from the file on load); ``ef_search`` is the query-time beam width, see
    :func:`~streamproc.search.tuning.tune_ef`.
    """

    dim: int
    metric: Metric
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.metric not in get_args(Metric):
            raise ValueError(f"metric must be one of {get_args(Metric)}, got {self.metric!r}")
        if self.m < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError(
                f"invalid HNSW parameters: m={self.m}, ef_construction={self.ef_construction}, "
                f"ef_search={self.ef_search}"
            )


class IndexChecksumError(WatchlistError):
    """The index file's SHA-256 differs from the recorded one (corrupt, truncated or swapped)."""

    def __init__(self, path: Path, expected: str, found: str) -> None:
        super().__init__(
            f"index file {path}: checksum mismatch (expected {expected[:12]}…, "
            f"found {found[:12]}…); restore from backup or re-enrol"
        )
        self.path = path
        self.expected = expected
        self.found = found


class HnswIndex:
    """Approximate nearest-neighbour index with labelled float32 vectors.

    Distances returned by :meth:`search` are in the metric's natural unit:

    * ``"l2"``: Euclidean distance ``||q - x||`` (hnswlib's squared value, square-rooted);
    * ``"cosine"``: cosine *distance* ``1 - cos(q, x)`` in ``[0, 2]``. Callers pass
      L2-normalised vectors; hnswlib normalises stored vectors and queries again,
      so :meth:`get_vectors` returns unit vectors.

    Not thread-safe: hnswlib keeps one ``ef`` per index, set before each query, so
    callers serialise access (:class:`~streamproc.search.watchlist.Watchlist` does); one
    batched call already uses ``num_threads`` threads.
    """

    def __init__(self, params: IndexParams, capacity: int = 1024, *, num_threads: int = -1) -> None:
        """Create an empty index; ``capacity`` grows automatically in :meth:`add`.

        ``num_threads`` is passed to hnswlib for builds and batch queries (-1: all cores).
        """
        raw = hnswlib.Index(space=params.metric, dim=params.dim)
        raw.init_index(max_elements=max(1, capacity), M=params.m, ef_construction=params.ef_construction)
        self._attach(params, raw, set(), num_threads)

    def _attach(self, params: IndexParams, raw: hnswlib.Index, deleted: set[int], num_threads: int) -> None:
        self._params = params
        self._raw = raw
        self._deleted = deleted
        self._num_threads = num_threads
        self._ef_search = params.ef_search

    @classmethod
    def _wrap(cls, params: IndexParams, raw: hnswlib.Index, deleted: set[int], num_threads: int) -> HnswIndex:
        obj = cls.__new__(cls)
        obj._attach(params, raw, deleted, num_threads)
        return obj

    # ------------------------------------------------------------------ properties
    @property
    def params(self) -> IndexParams:
        """The parameters the index was created (or loaded) with."""
        return self._params

    @property
    def ef_search(self) -> int:
        """Query-time beam width; :meth:`search` uses ``max(ef_search, k)``."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        if ef < 1:
            raise ValueError(f"ef_search must be >= 1, got {ef}")
        self._ef_search = int(ef)

    @property
    def capacity(self) -> int:
        """Allocated slots; deleted elements keep theirs until :meth:`compact`."""
        return self._raw.max_elements

    def __len__(self) -> int:
        """Live (not deleted) elements."""
        return self._raw.element_count - len(self._deleted)

    def labels(self) -> NDArray[np.int64]:
        """Sorted ``(N,)`` int64 labels of the live elements."""
        all_labels = np.asarray(self._raw.get_ids_list(), dtype=np.int64)
        if self._deleted:
            all_labels = all_labels[~np.isin(all_labels, np.fromiter(self._deleted, dtype=np.int64))]
        return np.sort(all_labels)

    def get_vectors(self, labels: ArrayLike) -> NDArray[np.float32]:
        """Stored ``(N, dim)`` float32 vectors for live ``labels`` (unit vectors for cosine)."""
        lab = _as_labels(labels)
        if lab.size == 0:
            return np.empty((0, self._params.dim), dtype=np.float32)
        missing = [int(x) for x in lab if int(x) in self._deleted]
        if missing:
            raise KeyError(f"labels {missing[:5]} are deleted")
        try:
            out = self._raw.get_items(lab.astype(np.uint64))
        except RuntimeError as exc:
            raise KeyError(f"some of the labels are not in the index ({exc})") from exc
        return np.ascontiguousarray(out, dtype=np.float32).reshape(lab.size, self._params.dim)

    # ------------------------------------------------------------------ mutation
    def add(self, vectors: ArrayLike, labels: ArrayLike) -> None:
        """Insert ``(N, dim)`` float32 ``vectors`` under new ``(N,)`` int64 ``labels``.

        Labels must be non-negative, unique, and not already used (live *or*
        deleted): hnswlib would silently overwrite or resurrect them. Capacity
        doubles as needed.
        """
        vec = as_matrix(vectors, self._params.dim, "vectors")
        lab = _as_labels(labels)
        if lab.shape[0] != vec.shape[0]:
            raise ValueError(f"{vec.shape[0]} vectors but {lab.shape[0]} labels")
        if vec.shape[0] == 0:
            return
        if not np.all(np.isfinite(vec)):
            raise ValueError("vectors contain NaN or infinity")
        if np.unique(lab).size != lab.size:
            raise ValueError("duplicate labels in one add() call")
        if self._raw.element_count:
            used = np.asarray(self._raw.get_ids_list(), dtype=np.int64)
            clash = lab[np.isin(lab, used)]
            if clash.size:
                raise ValueError(f"labels already used in the index: {clash[:5].tolist()}")
        needed = self._raw.element_count + vec.shape[0]
        if needed > self._raw.max_elements:
            self._raw.resize_index(max(needed, 2 * self._raw.max_elements))
        self._raw.add_items(vec, lab.astype(np.uint64), num_threads=self._num_threads)

    def mark_deleted(self, label: int) -> None:
        """Exclude ``label`` from results; its slot is reclaimed by :meth:`compact`."""
        label = int(label)
        if label in self._deleted:
            raise KeyError(f"label {label} is already deleted")
        try:
            self._raw.mark_deleted(label)
        except RuntimeError as exc:
            raise KeyError(f"label {label} is not in the index") from exc
        self._deleted.add(label)

    def copy(self) -> HnswIndex:
        """Deep copy (graph, vectors, deletions, ef_search), for copy-on-write updates."""
        clone = HnswIndex._wrap(self._params, hnswlib.Index(self._raw), set(self._deleted), self._num_threads)
        clone.ef_search = self._ef_search
        return clone

    def compact(self) -> HnswIndex:
        """Rebuild without deleted elements (hnswlib keeps them); same labels and ef_search."""
        labels = self.labels()
        fresh = HnswIndex(self._params, capacity=max(1, labels.size), num_threads=self._num_threads)
        fresh.add(self.get_vectors(labels), labels)
        fresh.ef_search = self._ef_search
        return fresh

    # ------------------------------------------------------------------ queries
    def search(self, queries: ArrayLike, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """k nearest live neighbours of each ``(Q, dim)`` float32 query.

        Returns ``(labels, distances)``, both ``(Q, k')`` with ``k' = min(k, len(self))``,
        distances ascending in the metric's natural unit (see class docstring).
        An empty index returns ``(Q, 0)`` arrays.
        """
        return self.search_at(queries, k, self._ef_search)

    def search_at(self, queries: ArrayLike, k: int, ef: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """:meth:`search` with an explicit beam width (``max(ef, k)`` is used)."""
        q = as_matrix(queries, self._params.dim, "queries")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = min(k, len(self))
        if kk == 0 or q.shape[0] == 0:
            return np.empty((q.shape[0], kk), dtype=np.int64), np.empty((q.shape[0], kk), dtype=np.float32)
        self._raw.set_ef(max(ef, kk))
        try:
            raw_labels, raw_dist = self._raw.knn_query(q, k=kk, num_threads=self._num_threads)
        except RuntimeError:
            # hnswlib found fewer than k live elements (many deletions, tiny ef):
            # answer exactly rather than fail.
            _log.debug("hnswlib search fell short of k=%d; using exact search", kk)
            return exact_search(self, q, kk)
        return raw_labels.astype(np.int64), _natural(raw_dist, self._params.metric)

    # ------------------------------------------------------------------ files
    def save(self, path: Path) -> str:
        """Write atomically (tmp in same dir, fsync, ``os.replace``); return the file's sha256 hex.

        The hash is computed from the bytes on disk, so it is what :meth:`load` checks.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self._raw.save_index(str(tmp))
            with tmp.open("rb") as fh:
                digest = _sha256_stream(fh)
                size = os.fstat(fh.fileno()).st_size
                os.fsync(fh.fileno())
            # hnswlib's ofstream does not report write errors (e.g. disk full).
            if size != self._raw.index_file_size():
                raise WatchlistError(
                    f"index file {path}: short write ({size} of "
                    f"{self._raw.index_file_size()} bytes); check free disk space"
                )
            tmp.replace(path)
        except (OSError, RuntimeError) as exc:
            raise WatchlistError(
                f"index file {path}: cannot write ({getattr(exc, 'strerror', None) or exc}); "
                "check free space and permissions"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return digest

    @classmethod
    def load(cls, path: Path, params: IndexParams, expected_sha256: str, *, num_threads: int = -1) -> HnswIndex:
        """Load a file written by :meth:`save`, verifying ``expected_sha256`` first.

        The checksum and the header geometry are checked on an open file handle,
        and hnswlib reads that same inode via ``/proc/self/fd`` (Linux), so a
        concurrent ``os.replace`` cannot swap in unverified bytes. Any mismatch or
        hnswlib failure raises :class:`WatchlistError` (never a crash, never a
        silently empty index).
        """
        path = Path(path)
        try:
            fh = path.open("rb")
        except FileNotFoundError as exc:
            raise WatchlistError(f"index file {path} is missing; restore from backup or re-enrol") from exc
        except OSError as exc:
            raise WatchlistError(f"index file {path}: cannot read ({exc.strerror or exc}); check permissions") from exc
        with fh:
            found = _sha256_stream(fh)
            if found != expected_sha256.lower():
                raise IndexChecksumError(path, expected_sha256.lower(), found)
            fh.seek(0)
            _check_header(path, fh.read(_HEADER.size), params)
            proc_fd = Path(f"/proc/self/fd/{fh.fileno()}")
            raw = hnswlib.Index(space=params.metric, dim=params.dim)
            try:
                raw.load_index(str(proc_fd if proc_fd.exists() else path))
            except (RuntimeError, ValueError, MemoryError) as exc:
                raise WatchlistError(
                    f"index file {path}: hnswlib cannot load it ({exc}); restore from backup or re-enrol"
                ) from exc
        deleted = _find_deleted(raw)
        return cls._wrap(params, raw, deleted, num_threads)


# ---------------------------------------------------------------------- ground truth
def exact_search(index: HnswIndex, queries: ArrayLike, k: int = 1) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Brute-force ground truth (hnswlib.BFIndex) over ``index``'s live vectors.

    Same return convention as :meth:`HnswIndex.search`. BFIndex does not normalise
    for cosine, so queries are normalised here (stored vectors already are).
    """
    params = index.params
    q = as_matrix(queries, params.dim, "queries")
    labels = index.labels()
    kk = min(k, labels.size)
    if kk == 0 or q.shape[0] == 0:
        return np.empty((q.shape[0], kk), dtype=np.int64), np.empty((q.shape[0], kk), dtype=np.float32)
    bf = hnswlib.BFIndex(space="ip" if params.metric == "cosine" else "l2", dim=params.dim)
    bf.init_index(labels.size)
    for start in range(0, labels.size, 65536):
        chunk = labels[start : start + 65536]
        bf.add_items(index.get_vectors(chunk), chunk.astype(np.uint64))
    if params.metric == "cosine":
        q = normalise(q)
    raw_labels, raw_dist = bf.knn_query(q, k=kk)
    return raw_labels.astype(np.int64), _natural(raw_dist, params.metric)


# ---------------------------------------------------------------------- helpers
def normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Row-wise L2 normalisation of ``(N, dim)`` float32 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file's bytes."""
    with Path(path).open("rb") as fh:
        return _sha256_stream(fh)


def fsync_dir(directory: Path) -> None:
    """Make a rename/creation in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        _log.debug("fsync not supported on directory %s", directory)
    finally:
        os.close(fd)


def _sha256_stream(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _natural(raw: NDArray[np.float32], metric: Metric) -> NDArray[np.float32]:
    """hnswlib distances -> natural unit: sqrt for squared L2; clip rounding below 0."""
    clipped = np.maximum(raw, 0.0)
    return (np.sqrt(clipped) if metric == "l2" else clipped).astype(np.float32)


def as_matrix(data: ArrayLike, dim: int, what: str) -> NDArray[np.float32]:
    """``data`` as a C-contiguous ``(N, dim)`` float32 matrix; ValueError naming ``what`` otherwise."""
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (N, {dim}), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or arr.size == 0):
        raise ValueError(f"{what} must be floating point, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_labels(labels: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError("labels must be non-negative")
    return out


def _check_header(path: Path, header: bytes, params: IndexParams) -> None:
    """Refuse files whose geometry does not match ``params`` (hnswlib would load garbage)."""
    if len(header) < _HEADER.size:
        raise WatchlistError(f"index file {path}: too short for an hnswlib header; restore from backup or re-enrol")
    (_off0, max_el, count, _per_el, label_off, data_off, _lvl, _ep, _mm, _mm0, m, _mult, _efc) = _HEADER.unpack(header)
    data_size = label_off - data_off
    if data_size != 4 * params.dim or count > max_el or m < 1:
        raise WatchlistError(
            f"index file {path}: header describes {data_size // 4}-d vectors "
            f"(expected {params.dim}) or is inconsistent; restore from backup or re-enrol"
        )


def _find_deleted(raw: hnswlib.Index) -> set[int]:
    """Recover deleted labels after load (hnswlib 0.8 exposes no list of them).

    ``get_items`` raises for a deleted label, so probe in chunks and bisect the
    failing ones: O(n) copies plus O(d log n) probes for d deletions.
    """
    ids = np.asarray(raw.get_ids_list(), dtype=np.uint64)
    stack = [ids[i : i + _DELETED_PROBE_CHUNK] for i in range(0, ids.size, _DELETED_PROBE_CHUNK)]
    deleted: set[int] = set()
    while stack:
        chunk = stack.pop()
        try:
            raw.get_items(chunk)
        except RuntimeError:
            if chunk.size == 1:
                deleted.add(int(chunk[0]))
            else:
                mid = chunk.size // 2
                stack.extend((chunk[:mid], chunk[mid:]))
    return deleted
