"""kNN evaluation: how well do a backbone's embeddings separate the classes of a dataset?

When images sit in class folders (`root/<class>/<image>`), each query's label is its folder name
and each neighbour's label is the folder name of the neighbour. Reported:

- `precision_at_1`: the nearest neighbour has the query's class (fraction of queries);
- `precision_at_k`: mean fraction of the k neighbours with the query's class;
- `knn_accuracy`: the majority class of the k neighbours (ties: larger summed similarity) is right;
- `per_class`: `{class: precision_at_1}`.

A quick way to judge a backbone for a dataset before training anything.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def folder_label(path: str | os.PathLike) -> str:
    """The class of an image in a class folder: its parent folder's name."""
    return Path(path).parent.name


def class_folder_labels(paths: Sequence[str | os.PathLike]) -> list[str] | None:
    """Labels from parent folders, or None when the paths do not look like class folders
    (fewer than two distinct parent folders)."""
    labels = [folder_label(p) for p in paths]
    return labels if len(set(labels)) >= 2 and all(labels) else None


def knn_metrics(query_labels: Sequence[str], neighbor_labels: Sequence[Sequence[str | None]],
                neighbor_scores: np.ndarray | None = None) -> dict:
    """Metrics from labels: `neighbor_labels[i]` are query i's k neighbours' labels, best first
    (None for a missing neighbour). Returns the dict described in the module docstring."""
    k = max((len(r) for r in neighbor_labels), default=0)
    if not query_labels or k == 0:
        return {"k": k, "n_queries": 0, "precision_at_1": 0.0, "precision_at_k": 0.0, "knn_accuracy": 0.0,
                "per_class": {}}
    p1, pk, acc = [], [], []
    per_class: dict[str, list[float]] = defaultdict(list)
    for i, (truth, row) in enumerate(zip(query_labels, neighbor_labels)):
        hit1 = float(bool(row) and row[0] == truth)
        p1.append(hit1)
        per_class[truth].append(hit1)
        pk.append(sum(lab == truth for lab in row) / k)
        scores = neighbor_scores[i] if neighbor_scores is not None else np.linspace(1, 0.5, len(row))
        acc.append(float(_vote(row, scores) == truth))
    return {"k": k, "n_queries": len(query_labels), "precision_at_1": float(np.mean(p1)),
            "precision_at_k": float(np.mean(pk)), "knn_accuracy": float(np.mean(acc)),
            "per_class": {c: float(np.mean(v)) for c, v in sorted(per_class.items())}}


def _vote(labels: Sequence[str | None], scores: Sequence[float]) -> str | None:
    votes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for lab, s in zip(labels, scores):
        if lab is not None:
            votes[lab][0] += 1
            votes[lab][1] += float(s)
    return max(votes, key=lambda c: tuple(votes[c])) if votes else None


def evaluate_knn(index, query_vectors: np.ndarray | None = None, query_paths: Sequence[str] | None = None,
                 *, k: int = 5, method: str = "exact") -> dict:
    """kNN evaluation of a `SimilarityIndex` whose images sit in class folders.

    With no queries, every indexed image is a query against the others (leave-one-out).
    Queries that are themselves indexed never count as their own neighbour."""
    from ..errors import VTError

    if query_vectors is None:
        query_vectors, query_paths = index.vectors, list(index.paths)
    if query_paths is None or len(query_paths) != len(query_vectors):
        raise ValueError("query_paths must name each query vector")
    q_labels = class_folder_labels(query_paths)
    if q_labels is None or class_folder_labels(index.paths) is None:
        raise VTError("kNN evaluation needs images in class folders (ROOT/<class>/<image>) for both the index "
                      "and the queries")
    scores, ids = index.search(query_vectors, k, method=method, exclude=[str(p) for p in query_paths])
    return metrics_from_results(q_labels, ids, scores, index.paths)


def metrics_from_results(query_labels: Sequence[str], ids: np.ndarray, scores: np.ndarray,
                         index_paths: Sequence[str]) -> dict:
    """`knn_metrics` for search results `ids` (Q, k) into `index_paths` (-1 = missing)."""
    labels = [[folder_label(index_paths[i]) if i >= 0 else None for i in row] for row in ids]
    return knn_metrics(query_labels, labels, scores)
