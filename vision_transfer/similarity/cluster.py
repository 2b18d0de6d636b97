"""k-means over an index's unit vectors: `clusters.json` and one montage PNG per cluster.

Spherical k-means (cosine): centroids are re-normalised means, assignment by largest inner
product. k-means++ seeding, a fixed seed, empty clusters re-seeded with the worst-fitted point.
Above `FAISS_MIN` vectors faiss's k-means does the work when installed.

`clusters.json`: `{"k", "seed", "n_images", "mean_cosine_to_centroid", "clusters": [{"id", "size",
"mean_cosine", "medoid", "members": [{"path", "cosine"}, ...]}]}`, clusters by size (largest first),
members by closeness to the centroid.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import VTError
from ..files import write_json
from .sheets import display_name, montage

FAISS_MIN = 50_000


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on cosine distance (1 - x.c): D^2 sampling."""
    centers = [x[rng.integers(len(x))]]
    dist = np.maximum(1.0 - x @ centers[0], 0.0)
    for _ in range(1, k):
        w = dist ** 2
        i = rng.choice(len(x), p=w / w.sum()) if w.sum() > 0 else rng.integers(len(x))
        centers.append(x[i])
        dist = np.minimum(dist, np.maximum(1.0 - x @ x[i], 0.0))
    return np.stack(centers)


def _normalise(c: np.ndarray) -> np.ndarray:
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, iters: int = 50,
           tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of `(N, D)` unit rows -> `(labels (N,) int64, centroids (k, D) unit rows)`."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not 1 <= k <= len(x):
        raise VTError(f"--k {k} must be between 1 and the number of indexed images ({len(x)})")
    if len(x) >= FAISS_MIN:
        from .search import faiss_available

        if faiss_available():
            return _faiss_kmeans(x, k, seed=seed, iters=iters)
    rng = np.random.default_rng(seed)
    c = _plus_plus(x, k, rng)
    prev = -np.inf
    for _ in range(iters):
        sims = x @ c.T
        labels = sims.argmax(axis=1)
        best = sims[np.arange(len(x)), labels]
        for j in range(k):
            members = labels == j
            if members.any():
                c[j] = x[members].sum(axis=0)
            else:  # re-seed an empty cluster with the point that fits its own centroid worst
                worst = int(best.argmin())
                c[j], best[worst], labels[worst] = x[worst], 1.0, j
        c = _normalise(c)
        objective = float(best.sum())
        if objective - prev <= tol * len(x):
            break
        prev = objective
    return (x @ c.T).argmax(axis=1).astype(np.int64), c.astype(np.float32)


def _faiss_kmeans(x: np.ndarray, k: int, *, seed: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64), _normalise(km.centroids).astype(np.float32)


def cluster_index(index, k: int, out: str | os.PathLike, *, seed: int = 0, montage_size: int = 32) -> dict:
    """Cluster a `SimilarityIndex`, write `clusters.json` and `cluster_NNN.png` (the `montage_size`
    members closest to the centroid) into `out`. Returns the clusters.json dict."""
    if len(index) == 0:
        raise VTError("the index is empty; nothing to cluster")
    labels, centroids = kmeans(index.vectors, k, seed=seed)
    cos = np.einsum("nd,nd->n", index.vectors, centroids[labels])
    clusters = []
    for j in range(k):
        members = np.flatnonzero(labels == j)
        members = members[np.argsort(-cos[members], kind="stable")]
        clusters.append({"size": int(len(members)), "mean_cosine": float(cos[members].mean()) if len(members) else 0.0,
                         "medoid": index.paths[members[0]] if len(members) else None,
                         "members": [{"path": index.paths[i], "cosine": round(float(cos[i]), 5)} for i in members]})
    clusters.sort(key=lambda c: -c["size"])
    out = Path(out)
    for j, c in enumerate(clusters):
        c["id"] = j
        shown = c["members"][:montage_size]
        c["montage"] = montage([m["path"] for m in shown], out / f"cluster_{j:03d}.png",
                               captions=[f"cos {m['cosine']:.3f}\n{display_name(m['path'])}" for m in shown],
                               title=f"cluster {j}: {c['size']} images, mean cosine {c['mean_cosine']:.3f}").name
    result = {"k": k, "seed": seed, "n_images": len(index), "mean_cosine_to_centroid": float(cos.mean()),
              "clusters": [{"id": c.pop("id"), **c} for c in clusters]}
    write_json(out / "clusters.json", result)
    return result

