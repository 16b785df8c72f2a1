"""Benchmark HnswIndex: build time, tuned ef, recall@1 vs exact search, query latency.

Usage::

    python bench/bench_index.py --sizes 10000,100000,1000000 --queries 1000 --dim 128 --seed 0

Data: random unit vectors (``--data sphere``, the shape of normalised face
embeddings) or raw Gaussian vectors (``--data gaussian``, a harder case for l2).
Queries, per size: ``--queries`` fresh random vectors (impostor-like: the
hardest case for ANN, the nearest neighbour is barely nearer than the rest) and
as many perturbed gallery vectors (probe-like). ef is tuned with
:func:`streamproc.search.tuning.tune_ef` on a separate, equally mixed query set, then
measured on the evaluation set; ground truth is hnswlib.BFIndex.

Latency is per single-query :meth:`HnswIndex.search` call (k=1, the pipeline's
shape), including the wrapper; throughput is one batched call on all threads.
The last line is a ``key=value`` headline.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from streamproc.search.index import HnswIndex, IndexParams, exact_search, normalise
from streamproc.search.tuning import recall_at_1, tune_ef
from streamproc.types import Metric

_TUNE_QUERIES = 2000
_NEAR_SIGMA = 0.3  # relative noise: perturbed probe at ~0.045 cosine distance from its template


@dataclass(frozen=True)
class Row:
    """One size's results."""

    size: int
    build_s: float
    ef: int
    recall: float
    recall_random: float
    recall_near: float
    p50_ms: float
    p99_ms: float
    batch_qps: float
    file_mb: float
    save_s: float
    load_s: float


def machine() -> str:
    """nproc, CPU model and library versions, for the record."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: nproc={usable} (os.cpu_count={os.cpu_count()}) cpu={model!r} "
        f"python={platform.python_version()} numpy={version('numpy')} hnswlib={version('hnswlib')}"
    )


def make_vectors(rng: np.random.Generator, n: int, dim: int, data: str) -> NDArray[np.float32]:
    """``(n, dim)`` float32: unit vectors (sphere) or standard Gaussian."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return normalise(x) if data == "sphere" else x


def make_queries(rng: np.random.Generator, gallery: NDArray[np.float32], n: int, data: str) -> NDArray[np.float32]:
    """``(2n, dim)``: n fresh random vectors, then n perturbed gallery vectors."""
    dim = gallery.shape[1]
    fresh = make_vectors(rng, n, dim, data)
    picked = gallery[rng.choice(gallery.shape[0], size=n, replace=False)]
    scale = float(np.mean(np.linalg.norm(picked, axis=1)))
    near = picked + rng.standard_normal(picked.shape, dtype=np.float32) * (_NEAR_SIGMA * scale / np.sqrt(dim))
    if data == "sphere":
        near = normalise(near)
    return np.concatenate([fresh, near]).astype(np.float32)


def run_size(size: int, args: argparse.Namespace, rng: np.random.Generator) -> Row:
    """Build, tune, measure one gallery size."""
    metric: Metric = args.metric
    gallery = make_vectors(rng, size, args.dim, args.data)
    params = IndexParams(dim=args.dim, metric=metric, m=args.m, ef_construction=args.ef_construction)
    t0 = time.perf_counter()
    index = HnswIndex(params, capacity=size, num_threads=args.threads)
    index.add(gallery, np.arange(size, dtype=np.int64))
    build_s = time.perf_counter() - t0
    print(f"  n={size}: built in {build_s:.1f}s", flush=True)

    tune_q = make_queries(rng, gallery, _TUNE_QUERIES // 2, args.data)
    eval_q = make_queries(rng, gallery, args.queries, args.data)
    del gallery
    t0 = time.perf_counter()
    truth_l, truth_d = exact_search(index, np.concatenate([tune_q, eval_q]), k=1)
    print(
        f"  n={size}: exact ground truth for {truth_l.shape[0]} queries in {time.perf_counter() - t0:.1f}s", flush=True
    )
    nt = tune_q.shape[0]
    ef = tune_ef(index, tune_q, args.target, args.candidates, exact=(truth_l[:nt], truth_d[:nt]))
    index.ef_search = ef

    ev_l, ev_d = truth_l[nt:], truth_d[nt:]
    half = args.queries
    recall = recall_at_1(index, eval_q, ef, (ev_l, ev_d))
    recall_random = recall_at_1(index, eval_q[:half], ef, (ev_l[:half], ev_d[:half]))
    recall_near = recall_at_1(index, eval_q[half:], ef, (ev_l[half:], ev_d[half:]))

    times = np.empty(eval_q.shape[0])
    for i in range(eval_q.shape[0]):
        t0 = time.perf_counter()
        index.search(eval_q[i : i + 1], k=1)
        times[i] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(eval_q, k=1)
    batch_qps = eval_q.shape[0] / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "bench.hnsw"
        t0 = time.perf_counter()
        sha = index.save(path)
        save_s = time.perf_counter() - t0
        file_mb = path.stat().st_size / 2**20
        t0 = time.perf_counter()
        HnswIndex.load(path, params, sha, num_threads=args.threads)
        load_s = time.perf_counter() - t0

    return Row(
        size=size,
        build_s=build_s,
        ef=ef,
        recall=recall,
        recall_random=recall_random,
        recall_near=recall_near,
        p50_ms=float(np.percentile(times, 50) * 1e3),
        p99_ms=float(np.percentile(times, 99) * 1e3),
        batch_qps=batch_qps,
        file_mb=file_mb,
        save_s=save_s,
        load_s=load_s,
    )


def tag(size: int) -> str:
    """1000000 -> '1e6' (powers of ten), else the number."""
    exp = round(np.log10(size)) if size > 0 else 0
    return f"1e{exp}" if 10**exp == size else str(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1000, help="random queries (plus as many near-gallery)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", choices=["l2", "cosine"], default="cosine")
    parser.add_argument("--data", choices=["sphere", "gaussian"], default="sphere")
    parser.add_argument("--m", type=int, default=IndexParams(dim=1, metric="l2").m)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="hnswlib threads for build and batch queries")
    parser.add_argument("--target", type=float, default=0.99, help="recall@1 target for tune_ef")
    parser.add_argument("--candidates", default="16,32,64,128,256,512,1024,2048,4096")
    parser.add_argument("--tmp", default=None, help="directory for the save/load timing file")
    args = parser.parse_args(argv)
    args.candidates = [int(c) for c in args.candidates.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]

    print(machine())
    print(
        f"config: dim={args.dim} metric={args.metric} data={args.data} M={args.m} "
        f"ef_construction={args.ef_construction} threads={args.threads} target={args.target} "
        f"queries={args.queries} random + {args.queries} near-gallery, seed={args.seed}",
        flush=True,
    )
    rng = np.random.default_rng(args.seed)
    rows = [run_size(size, args, rng) for size in sizes]

    header = (
        f"{'n':>9} {'build_s':>8} {'ef':>5} {'recall@1':>9} {'random':>7} {'near':>7} "
        f"{'p50_ms':>7} {'p99_ms':>7} {'batch_qps':>10} {'file_MB':>8} {'save_s':>7} {'load_s':>7}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.size:>9} {r.build_s:>8.1f} {r.ef:>5} {r.recall:>9.4f} {r.recall_random:>7.4f} "
            f"{r.recall_near:>7.4f} {r.p50_ms:>7.3f} {r.p99_ms:>7.3f} {r.batch_qps:>10.0f} "
            f"{r.file_mb:>8.1f} {r.save_s:>7.2f} {r.load_s:>7.2f}"
        )
    headline = []
    for r in rows:
        t = tag(r.size)
        headline += [
            f"recall_at_1_{t}={r.recall:.4f}",
            f"recall_random_{t}={r.recall_random:.4f}",
            f"recall_near_{t}={r.recall_near:.4f}",
            f"p50_query_ms_{t}={r.p50_ms:.3f}",
            f"p99_query_ms_{t}={r.p99_ms:.3f}",
            f"ef_{t}={r.ef}",
            f"build_s_{t}={r.build_s:.1f}",
        ]
    headline += [f"M={args.m}", f"metric={args.metric}", f"nproc={len(os.sched_getaffinity(0))}"]
    print(" ".join(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
