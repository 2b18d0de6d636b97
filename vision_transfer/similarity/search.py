"""Top-k cosine search over unit vectors: exact (one matrix product per query block) or faiss.

- `exact`: `queries @ vectors.T` in blocks that keep the score matrix near 256 MB, then a partial
  sort. Always right; about 2 * N * D flops per query.
- `ivf` (faiss `IndexIVFFlat`, inner product): k-means into `nlist ~ 4 sqrt(N)` cells, searching
  `nprobe` of them. Fast to build; recall depends on how clustered the data are.
- `hnsw` (faiss `IndexHNSWFlat`, inner product): a graph; high recall, slow to build on a CPU.
- `auto`: exact below `AUTO_FAISS_MIN` vectors or without faiss installed, else ivf.

faiss is an optional extra (`pip install vision-transfer[faiss]`); approximate methods report
their recall against exact search with `estimate_recall`.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import VTError
from ..files import atomic_path

METHODS = ("auto", "exact", "ivf", "hnsw")
AUTO_FAISS_MIN = 100_000
_BLOCK_FLOATS = 1 << 26  # score-matrix floats per block (256 MB)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_method(method: str, n: int) -> str:
    if method not in METHODS:
        raise VTError(f"unknown search method {method!r}; valid: {', '.join(METHODS)}")
    if method == "auto":
        return "ivf" if n >= AUTO_FAISS_MIN and faiss_available() else "exact"
    if method != "exact" and not faiss_available():
        raise VTError(f"--search {method} needs faiss: pip install faiss-cpu (or use --search exact)")
    return method


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(N, D)`, `(Q, D)` -> scores `(Q, k)` float32 and ids `(Q, k)` int64, best first (-1 / -inf pads)."""
    n, q = len(vectors), len(queries)
    kk = min(k, n)
    scores = np.full((q, k), -np.inf, np.float32)
    ids = np.full((q, k), -1, np.int64)
    block = max(1, _BLOCK_FLOATS // max(n, 1))
    for start in range(0, q, block):
        sims = queries[start:start + block] @ vectors.T
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(sims), 1))
        top_s = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        scores[start:start + block, :kk] = np.take_along_axis(top_s, order, axis=1)
        ids[start:start + block, :kk] = np.take_along_axis(top, order, axis=1)
    return scores, ids


def ivf_params(n: int) -> tuple[int, int]:
    """`(nlist, nprobe)` for n vectors: ~sqrt(n) cells (at least 39 training points each) and
    nlist/16 of them probed (at least 8): about 6 % of the vectors scanned per query. sqrt(n), not
    faiss's larger 4-16 sqrt(n), keeps training on 2 CPU cores to seconds at 200,000 x 1,280."""
    nlist = int(max(1, min(np.sqrt(n), n // 39)))
    return nlist, min(nlist, max(8, nlist // 16))


def build_faiss(vectors: np.ndarray, method: str, *, seed: int = 0):
    """A faiss inner-product index over `vectors` (ivf: k-means on up to 64 points per cell, 10 rounds;
    hnsw: M=32, efConstruction 40 — its build costs minutes per 100,000 vectors of 1,280-d on 2 cores)."""
    import faiss

    n, d = vectors.shape
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(vectors)
        index.hnsw.efSearch = 128
        return index
    nlist, nprobe = ivf_params(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = vectors[np.sort(rng.choice(n, 64 * nlist, replace=False))] if n > 64 * nlist else vectors
    index.cp.seed, index.cp.niter = seed, 10
    index.cp.min_points_per_centroid = 1  # tiny indexes: no "please provide 39 points" warning
    index.train(np.ascontiguousarray(train))
    index.add(vectors)
    index.nprobe = nprobe
    return index


def _cache_path(cache_dir: Path, vectors: np.ndarray, method: str) -> Path:
    sample = vectors[:: max(1, len(vectors) // 1024)]
    crc = zlib.crc32(np.ascontiguousarray(sample).tobytes())
    return cache_dir / f"faiss-{method}-{len(vectors)}-{crc:08x}.index"


def get_faiss(vectors: np.ndarray, method: str, cache_dir: str | os.PathLike | None = None):
    """Build (or read from `cache_dir`) the faiss index of `vectors`; stale caches are replaced."""
    import faiss

    if cache_dir is None:
        return build_faiss(vectors, method)
    cache_dir = Path(cache_dir)
    path = _cache_path(cache_dir, vectors, method)
    if path.is_file():
        try:
            return faiss.read_index(str(path))
        except RuntimeError:
            pass
    index = build_faiss(vectors, method)
    for old in cache_dir.glob(f"faiss-{method}-*.index"):
        old.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return index


def search(vectors: np.ndarray, queries: np.ndarray, k: int, *, method: str = "auto",
           cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner-product search (cosine on unit vectors); see the module docstring for `method`."""
    if k < 1:
        raise VTError(f"k must be at least 1, got {k}")
    method = resolve_method(method, len(vectors))
    if method == "exact":
        return exact_search(vectors, queries, k)
    index = get_faiss(vectors, method, cache_dir)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    return scores, ids.astype(np.int64)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k (both `(Q, k)`, -1 ignored)."""
    hits, total = 0, 0
    for a, e in zip(approx_ids, exact_ids):
        truth = set(e[e >= 0].tolist())
        hits += len(truth & set(a[a >= 0].tolist()))
        total += len(truth)
    return hits / total if total else 1.0


def estimate_recall(vectors: np.ndarray, queries: np.ndarray, k: int, approx_ids: np.ndarray, *,
                    max_queries: int = 200, seed: int = 0) -> float:
    """Recall@k of `approx_ids` against exact search on up to `max_queries` of the queries."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(queries), min(len(queries), max_queries), replace=False))
    _, exact_ids = exact_search(vectors, queries[pick], k)
    return recall_at_k(approx_ids[pick], exact_ids)
