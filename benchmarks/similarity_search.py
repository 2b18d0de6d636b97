"""Exact vs faiss search on 200,000 random 1,280-d unit vectors: queries per second and recall@10.

    python benchmarks/similarity_search.py                 # exact and IVF, about two minutes on 2 cores
    python benchmarks/similarity_search.py --hnsw          # adds HNSW (its build takes many minutes here)
    python benchmarks/similarity_search.py --n 50000 --queries 100

Two data sets, both random, 1,280-d (the width of EfficientNet-Lite0's head features):
- `isotropic`: Gaussian noise on the sphere, queries drawn the same way. No neighbourhood
  structure at all: the worst case for any approximate index.
- `clustered`: 1,000 random centres, points = centre + noise (cosine to centre ~0.7), queries are new
  points from the same mixture. Closer to real embeddings, which form groups.

Every method runs the same queries as one batch (what `vt similar` does; "q/s batch", "x exact")
and 20 of them one at a time ("q/s single": an interactive query); recall@10 is against the exact
top 10. Timings are wall clock with the machine's threads (numpy BLAS, faiss OpenMP).
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np

from vision_transfer.similarity.search import build_faiss, exact_search, ivf_params, recall_at_k


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(kind: str, n: int, d: int, q: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "isotropic":
        return unit(rng.standard_normal((n, d), dtype=np.float32)), unit(rng.standard_normal((q, d), dtype=np.float32))
    centres = unit(rng.standard_normal((1000, d), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        x = rng.standard_normal((m, d), dtype=np.float32)
        x *= 1.0 / np.sqrt(d)                     # noise of norm ~1: cosine to the centre ~0.7
        x += centres[rng.integers(len(centres), size=m)]
        return unit(x)

    return draw(n), draw(q)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def one_at_a_time_qps(search, q: np.ndarray, n: int = 20) -> float:
    """Queries per second when each query comes alone (an interactive `vt similar IMAGE`)."""
    t0 = time.perf_counter()
    for i in range(min(n, len(q))):
        search(q[i:i + 1])
    return min(n, len(q)) / (time.perf_counter() - t0)


def search_row(index, q: np.ndarray, k: int, truth: np.ndarray, t_build: float, label: str) -> dict:
    (_, ids), t_search = timed(index.search, q, k)
    return {"method": label, "build_s": t_build, "search_s": t_search, "recall": recall_at_k(ids, truth),
            "qps_single": one_at_a_time_qps(lambda v: index.search(v, k), q)}


def faiss_flat_row(x: np.ndarray, q: np.ndarray, k: int, truth: np.ndarray) -> dict:
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    _, t_build = timed(index.add, x)
    return search_row(index, q, k, truth, t_build, "exact (faiss IndexFlatIP)")


def run(kind: str, args: argparse.Namespace) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    (x, q), t_data = timed(make_data, kind, args.n, args.dim, args.queries, rng)
    print(f"\n[{kind}] {args.n:,} x {args.dim} vectors, {args.queries} queries, k={args.k} (data {t_data:.1f}s)")
    (_, truth), t_exact = timed(exact_search, x, q, args.k)
    rows = [{"method": "exact (numpy matmul, vt default)", "build_s": 0.0, "search_s": t_exact, "recall": 1.0,
             "qps_single": one_at_a_time_qps(lambda v: exact_search(x, v, args.k), q)}]
    rows.append(faiss_flat_row(x, q, args.k, truth))
    for method in ["ivf"] + (["hnsw"] if args.hnsw else []):
        index, t_build = timed(build_faiss, x, method)
        if method == "ivf":  # the defaults of vt similar, then the recall / speed dial both ways
            default = index.nprobe
            for nprobe in (default, max(1, default // 3), min(index.nlist, default * 4)):
                index.nprobe = nprobe
                rows.append(search_row(index, q, args.k, truth, t_build,
                                       f"faiss IVF-Flat nlist={index.nlist} nprobe={nprobe}"))
        else:
            rows.append(search_row(index, q, args.k, truth, t_build, f"faiss HNSW M=32 efSearch={index.hnsw.efSearch}"))
        del index
    del x
    gc.collect()
    for r in rows:
        r["qps"] = args.queries / r["search_s"]
        r["speedup"] = t_exact / r["search_s"]
    return rows


def print_table(kind: str, rows: list[dict]) -> None:
    print(f"{'method':42s} {'build s':>8s} {'q/s batch':>10s} {'x exact':>8s} {'q/s single':>11s} {'recall@10':>10s}")
    for r in rows:
        print(f"{r['method']:42s} {r['build_s']:8.1f} {r['qps']:10.0f} {r['speedup']:8.1f} {r['qps_single']:11.0f} "
              f"{r['recall']:10.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hnsw", action="store_true", help="also build HNSW (slow on a CPU at this size)")
    ap.add_argument("--data", nargs="+", default=["isotropic", "clustered"], choices=["isotropic", "clustered"])
    args = ap.parse_args()
    nlist, nprobe = ivf_params(args.n)
    print(f"IVF defaults of vt similar at n={args.n:,}: nlist={nlist}, nprobe={nprobe} "
          f"(~{100 * nprobe / nlist:.0f} % of vectors scanned per query)")
    for kind in args.data:
        print_table(kind, run(kind, args))


if __name__ == "__main__":
    main()
