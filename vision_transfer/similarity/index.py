"""`SimilarityIndex`: unit vectors, the image paths they came from, and the model that made them.

On disk (INDEX_DIR):

- `vectors.npy`: `(N, D)` float32, unit rows;
- `index.json`: `{"version": 1, "identity": {backbone, weights, weights_sha256, preprocessing,
  image_size}, "dim": D, "paths": [absolute path, ...], "stats": [[size, mtime_ns], ...]}`;
- `faiss-<kind>-<N>.index`: an optional cache of an approximate index (rebuilt when stale).

Searching a query embedded by another model is refused: cosine scores between two models'
vectors mean nothing.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import VTError
from ..files import atomic_path
from .identity import describe_identity, same_identity
from .search import search as _search

FORMAT_VERSION = 1


def file_stat(path: str | os.PathLike) -> list[int]:
    """`[size, mtime_ns]`: what tells incremental embedding that a file changed."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


class SimilarityIndex:
    """Embeddings of images, searchable by cosine similarity.

    >>> index = SimilarityIndex(model.identity)
    >>> index.add(vectors, paths)                  # (N, D) unit rows, N paths
    >>> scores, ids = index.search(queries, k=5)   # (Q, k) each, best first; ids index index.paths
    >>> index.save("my-index"); SimilarityIndex.load("my-index")
    """

    def __init__(self, identity: dict, *, dim: int | None = None) -> None:
        self.identity = dict(identity)
        self.dim = dim
        self.vectors = np.zeros((0, dim or 0), np.float32)
        self.paths: list[str] = []
        self.stats: list[list[int]] = []
        self.directory: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def check_identity(self, identity: dict | None, *, what: str = "query") -> None:
        if identity is not None and not same_identity(identity, self.identity):
            raise VTError(f"{what} embedded with {describe_identity(identity)}, but the index was built with "
                          f"{describe_identity(self.identity)}; use the index's model or build a new index")

    def add(self, vectors: np.ndarray, paths: Sequence[str | os.PathLike], *, identity: dict | None = None,
            stats: Sequence[Sequence[int]] | None = None) -> None:
        """Append `(N, D)` vectors for `paths`; a path already indexed is replaced (re-embedded file)."""
        self.check_identity(identity, what="new images")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(paths):
            raise ValueError(f"vectors {vectors.shape} do not match {len(paths)} paths")
        if self.dim is None or len(self) == 0:
            self.dim = self.dim or vectors.shape[1]
            self.vectors = self.vectors.reshape(0, self.dim)
        if vectors.shape[1] != self.dim:
            raise VTError(f"vectors of dimension {vectors.shape[1]} cannot join an index of dimension {self.dim}")
        new = [str(p) for p in paths]
        stats = [list(s) for s in stats] if stats is not None else [file_stat(p) if os.path.exists(p) else [0, 0]
                                                                     for p in new]
        self.remove(new)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.paths += new
        self.stats += stats

    def remove(self, paths: Sequence[str | os.PathLike]) -> int:
        """Drop the entries of `paths` (if present); returns how many were dropped."""
        drop = {str(p) for p in paths}
        keep = [i for i, p in enumerate(self.paths) if p not in drop]
        removed = len(self.paths) - len(keep)
        if removed:
            self.vectors = self.vectors[keep]
            self.paths = [self.paths[i] for i in keep]
            self.stats = [self.stats[i] for i in keep]
        return removed

    def stale(self, paths: Sequence[str | os.PathLike]) -> list[Path]:
        """The files among `paths` that are not indexed or changed since (size or mtime)."""
        known = dict(zip(self.paths, self.stats))
        return [Path(p) for p in paths if known.get(str(p)) != file_stat(p)]

    def search(self, queries: np.ndarray, k: int = 5, *, method: str = "auto", identity: dict | None = None,
               exclude: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine neighbours of `(Q, D)` unit queries -> `(scores (Q, k) float32, ids (Q, k) int64)`,
        best first; ids point into `self.paths`, -1 (score -inf) where fewer than k exist.
        `exclude[i]`: a path never returned for query i (the query itself, when it is indexed).
        `method`: auto | exact | ivf | hnsw (see `search.search`)."""
        self.check_identity(identity)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise VTError(f"queries of shape {queries.shape} do not fit an index of dimension {self.dim}")
        if len(self) == 0:
            raise VTError("the index is empty; add images with vt embed IMAGE_DIR --out INDEX_DIR")
        extra = 1 if exclude is not None else 0
        scores, ids = _search(self.vectors, queries, k + extra, method=method, cache_dir=self.directory)
        if exclude is not None:
            scores, ids = _drop_excluded(scores, ids, self.paths, exclude, k)
        return scores, ids

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `vectors.npy` and `index.json` atomically into `directory` (created)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _atomic(d / "vectors.npy", lambda f: np.save(f, self.vectors))
        meta = {"version": FORMAT_VERSION, "identity": self.identity, "dim": self.dim,
                "paths": self.paths, "stats": self.stats}
        _atomic(d / "index.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        self.directory = d
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SimilarityIndex:
        d = Path(directory)
        meta_path, vec_path = d / "index.json", d / "vectors.npy"
        if not meta_path.is_file() or not vec_path.is_file():
            raise VTError(f"{d} is not a similarity index (no index.json / vectors.npy); build one with "
                          f"vt embed IMAGE_DIR --out {d}")
        try:
            meta = json.loads(meta_path.read_text())
            vectors = np.load(vec_path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise VTError(f"index {d} is damaged ({type(e).__name__}); rebuild it with vt embed") from None
        if meta.get("version") != FORMAT_VERSION or len(meta.get("paths", ())) != len(vectors):
            raise VTError(f"index {d} has an unknown version or mismatched files; rebuild it with vt embed")
        index = cls(meta["identity"], dim=int(meta["dim"]))
        index.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index.paths = [str(p) for p in meta["paths"]]
        index.stats = [list(s) for s in meta.get("stats", [[0, 0]] * len(index.paths))]
        index.directory = d
        return index


def _drop_excluded(scores: np.ndarray, ids: np.ndarray, paths: list[str], exclude: Sequence[str],
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for q, (row_s, row_i) in enumerate(zip(scores, ids)):
        keep = [j for j, i in enumerate(row_i) if i < 0 or paths[i] != str(exclude[q])][:k]
        out_s[q, : len(keep)], out_i[q, : len(keep)] = row_s[keep], row_i[keep]
    return out_s, out_i


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
