"""HnswIndex: recall against exact search, deletions, compaction, files, growth."""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from streamproc.errors import WatchlistError
from streamproc.search.index import HnswIndex, IndexParams, exact_search, normalise
from streamproc.search.tuning import recall_at_1, tune_ef
from streamproc.types import Metric

DIM = 128
GALLERY = 20_000
QUERIES = 500


def _gallery(metric: Metric, n: int, seed: int) -> NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return normalise(x) if metric == "cosine" else x


def _queries(gallery: NDArray[np.float32], metric: Metric, seed: int, n: int = QUERIES) -> NDArray[np.float32]:
    """Half perturbed gallery vectors (probe-like), half fresh random vectors (impostor-like)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    picked = gallery[rng.choice(gallery.shape[0], size=half, replace=gallery.shape[0] < half)]
    scale = float(np.mean(np.linalg.norm(gallery, axis=1)))
    near = picked + rng.standard_normal(picked.shape).astype(np.float32) * (0.3 * scale / np.sqrt(DIM))
    fresh = rng.standard_normal((n - half, DIM)).astype(np.float32) * (scale / np.sqrt(DIM))
    q = np.concatenate([near, fresh]).astype(np.float32)
    return normalise(q) if metric == "cosine" else q


def _bf_top1(gallery: NDArray[np.float32], queries: NDArray[np.float32], metric: Metric) -> NDArray[np.int64]:
    """Ground truth straight from hnswlib.BFIndex, independent of streamproc.search.index."""
    bf = hnswlib.BFIndex(space="ip" if metric == "cosine" else "l2", dim=DIM)
    bf.init_index(gallery.shape[0])
    bf.add_items(gallery, np.arange(gallery.shape[0], dtype=np.uint64))
    labels, _ = bf.knn_query(queries, k=1)
    return labels[:, 0].astype(np.int64)


@pytest.fixture(scope="module", params=["l2", "cosine"])
def built(request: pytest.FixtureRequest) -> tuple[HnswIndex, NDArray[np.float32], NDArray[np.float32]]:
    metric: Metric = request.param
    gallery = _gallery(metric, GALLERY, seed=1)
    index = HnswIndex(IndexParams(dim=DIM, metric=metric), capacity=GALLERY)
    index.add(gallery, np.arange(GALLERY, dtype=np.int64))
    return index, gallery, _queries(gallery, metric, seed=2)


@pytest.mark.slow
def test_recall_at_tuned_ef(built: tuple[HnswIndex, NDArray[np.float32], NDArray[np.float32]]) -> None:
    index, gallery, queries = built
    metric = index.params.metric
    # Tune on one query set (2000, as Watchlist does for large watchlists), measure on
    # another: the ef must generalise, not just fit the tuning sample.
    tuning = _queries(gallery, metric, seed=3, n=2000)
    index.ef_search = tune_ef(index, tuning)
    truth = _bf_top1(gallery, queries, metric)
    labels, dists = index.search(queries, k=5)
    assert labels.shape == (QUERIES, 5) and dists.shape == (QUERIES, 5)
    assert labels.dtype == np.int64 and dists.dtype == np.float32
    assert np.all(np.diff(dists, axis=1) >= 0)
    recall = float(np.mean(labels[:, 0] == truth))
    assert recall >= 0.99, f"recall@1 {recall:.4f} at ef={index.ef_search} ({metric})"
    assert recall_at_1(index, queries, index.ef_search) >= 0.99


def test_distances_are_natural_units(built: tuple[HnswIndex, NDArray[np.float32], NDArray[np.float32]]) -> None:
    index, gallery, queries = built
    labels, dists = index.search(queries[:20], k=3)
    picked = gallery[labels]  # (20, 3, DIM)
    if index.params.metric == "l2":
        expected = np.linalg.norm(picked - queries[:20, None, :], axis=2)
    else:
        expected = 1.0 - np.einsum("qkd,qd->qk", picked, queries[:20])
    np.testing.assert_allclose(dists, expected, rtol=1e-4, atol=1e-4)


def test_exact_search_matches_numpy() -> None:
    gallery = _gallery("l2", 300, seed=5)
    index = HnswIndex(IndexParams(dim=DIM, metric="l2"))
    index.add(gallery, np.arange(300))
    q = _gallery("l2", 10, seed=6)
    labels, dists = exact_search(index, q, k=2)
    full = np.linalg.norm(gallery[None, :, :] - q[:, None, :], axis=2)
    np.testing.assert_array_equal(labels[:, 0], np.argmin(full, axis=1))
    np.testing.assert_allclose(dists[:, 0], np.min(full, axis=1), rtol=1e-4)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_mark_deleted_excludes_label(metric: Metric) -> None:
    gallery = _gallery(metric, 500, seed=7)
    index = HnswIndex(IndexParams(dim=DIM, metric=metric))
    index.add(gallery, np.arange(1000, 1500))
    labels, dists = index.search(gallery[10:11], k=1)
    assert labels[0, 0] == 1010 and dists[0, 0] == pytest.approx(0.0, abs=1e-5)
    index.mark_deleted(1010)
    assert len(index) == 499
    labels, _ = index.search(gallery[10:11], k=499)
    assert 1010 not in labels and labels.shape == (1, 499)
    assert 1010 not in index.labels()
    with pytest.raises(KeyError):
        index.mark_deleted(1010)
    with pytest.raises(KeyError):
        index.mark_deleted(99)


def test_k_clamped_and_empty_index() -> None:
    params = IndexParams(dim=4, metric="l2")
    empty = HnswIndex(params)
    labels, dists = empty.search(np.zeros((3, 4), np.float32), k=5)
    assert labels.shape == (3, 0) and dists.shape == (3, 0)
    small = HnswIndex(params)
    small.add(np.eye(4, dtype=np.float32), np.arange(4))
    small.mark_deleted(0)
    labels, _ = small.search(np.eye(4, dtype=np.float32), k=10)
    assert labels.shape == (4, 3)
    assert set(labels.ravel().tolist()) == {1, 2, 3}
    with pytest.raises(ValueError, match="shape"):
        small.search(np.zeros((1, 5), np.float32), k=1)


def test_add_rejects_reused_labels() -> None:
    index = HnswIndex(IndexParams(dim=4, metric="l2"))
    index.add(np.eye(4, dtype=np.float32), np.arange(4))
    index.mark_deleted(2)
    with pytest.raises(ValueError, match="already used"):
        index.add(np.ones((1, 4), np.float32), np.array([2]))  # would resurrect a deleted label
    with pytest.raises(ValueError, match="duplicate"):
        index.add(np.ones((2, 4), np.float32), np.array([7, 7]))
    with pytest.raises(ValueError, match="non-negative"):
        index.add(np.ones((1, 4), np.float32), np.array([-1]))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 4), np.nan, np.float32), np.array([9]))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_compact_keeps_live_labels_and_results(metric: Metric) -> None:
    gallery = _gallery(metric, 2000, seed=8)
    index = HnswIndex(IndexParams(dim=DIM, metric=metric, ef_search=200))
    index.add(gallery, np.arange(2000))
    for label in range(0, 2000, 3):
        index.mark_deleted(label)
    copied = index.copy()
    assert copied.ef_search == 200 and len(copied) == len(index)
    copied.mark_deleted(1)
    assert len(copied) == len(index) - 1  # independent of the original
    compacted = index.compact()
    np.testing.assert_array_equal(compacted.labels(), index.labels())
    assert len(compacted) == len(index) and compacted.capacity == len(index)
    assert compacted.ef_search == 200
    queries = _queries(gallery, metric, seed=9)[:100]
    before, d_before = index.search(queries, k=1)
    after, d_after = compacted.search(queries, k=1)
    truth, _ = exact_search(compacted, queries, k=1)
    assert np.mean(after[:, 0] == before[:, 0]) >= 0.99
    assert np.mean(after[:, 0] == truth[:, 0]) >= 0.99
    np.testing.assert_allclose(d_after[after == before], d_before[after == before], rtol=1e-5)
    assert not np.isin(after, np.arange(0, 2000, 3)).any()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_save_load_round_trip(tmp_path: Path, metric: Metric) -> None:
    gallery = _gallery(metric, 1000, seed=10)
    params = IndexParams(dim=DIM, metric=metric)
    index = HnswIndex(params)
    index.add(gallery, np.arange(1000))
    index.mark_deleted(5)
    index.mark_deleted(500)
    path = tmp_path / "i.hnsw"
    sha = index.save(path)
    assert len(sha) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.hnsw"]  # no tmp left behind
    loaded = HnswIndex.load(path, params, sha)
    assert len(loaded) == 998
    np.testing.assert_array_equal(loaded.labels(), index.labels())
    queries = _queries(gallery, metric, seed=11)
    a_lab, a_dist = index.search(queries, k=10)
    b_lab, b_dist = loaded.search(queries, k=10)
    np.testing.assert_array_equal(a_lab, b_lab)
    np.testing.assert_array_equal(a_dist, b_dist)
    assert loaded.save(tmp_path / "again.hnsw") == sha  # deterministic bytes


def _saved(tmp_path: Path) -> tuple[Path, IndexParams, str]:
    params = IndexParams(dim=DIM, metric="l2")
    index = HnswIndex(params)
    index.add(_gallery("l2", 200, seed=12), np.arange(200))
    path = tmp_path / "i.hnsw"
    return path, params, index.save(path)


@pytest.mark.parametrize("offset", [0, 40, 1000, -1])
def test_byte_flip_is_rejected(tmp_path: Path, offset: int) -> None:
    path, params, sha = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WatchlistError, match="checksum mismatch"):
        HnswIndex.load(path, params, sha)


@pytest.mark.parametrize("keep", [0, 10, 96, 5000])
def test_truncated_file_is_rejected(tmp_path: Path, keep: int) -> None:
    path, params, sha = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(WatchlistError, match="checksum mismatch"):
        HnswIndex.load(path, params, sha)


def test_missing_file_and_wrong_geometry(tmp_path: Path) -> None:
    path, params, sha = _saved(tmp_path)
    with pytest.raises(WatchlistError, match="missing"):
        HnswIndex.load(tmp_path / "nope.hnsw", params, sha)
    # Correct checksum but another dimension: hnswlib would load garbage silently.
    with pytest.raises(WatchlistError, match=r"128-d vectors \(expected 64\)"):
        HnswIndex.load(path, IndexParams(dim=64, metric="l2"), sha)


def test_grows_beyond_initial_capacity() -> None:
    gallery = _gallery("l2", 300, seed=13)
    index = HnswIndex(IndexParams(dim=DIM, metric="l2"), capacity=8)
    for start in range(0, 300, 37):
        index.add(gallery[start : start + 37], np.arange(start, min(300, start + 37)))
    assert len(index) == 300 and index.capacity >= 300
    labels, dists = index.search(gallery, k=1)
    assert np.mean(labels[:, 0] == np.arange(300)) == 1.0
    assert float(dists.max()) == 0.0


def test_tune_ef_small_index_is_low_and_validates() -> None:
    gallery = _gallery("cosine", 100, seed=14)
    index = HnswIndex(IndexParams(dim=DIM, metric="cosine"))
    index.add(gallery, np.arange(100))
    assert tune_ef(index, _queries(gallery, "cosine", seed=15)) <= 64
    assert tune_ef(HnswIndex(index.params), gallery[:3]) == 16  # empty index
    with pytest.raises(ValueError):
        tune_ef(index, gallery[:3], candidates=())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=1, max_value=60),
    dim=st.integers(min_value=2, max_value=24),
    metric=st.sampled_from(["l2", "cosine"]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    scale=st.floats(min_value=1e-2, max_value=1e3),
)
def test_member_is_found_at_distance_zero(n: int, dim: int, metric: Metric, seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    vectors = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    if metric == "cosine":
        vectors = normalise(vectors)
    labels = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    index = HnswIndex(IndexParams(dim=dim, metric=metric), capacity=max(1, n // 3))
    index.add(vectors, labels)
    got, dists = index.search(vectors, k=n)
    assert got.shape == (n, n)
    for i in range(n):
        hit = np.flatnonzero(got[i] == labels[i])
        assert hit.size == 1, "a stored vector must be among its own results"
        assert dists[i, hit[0]] <= 1e-5 * max(1.0, scale)
        assert dists[i, 0] <= 1e-5 * max(1.0, scale)
