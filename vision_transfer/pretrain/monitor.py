"""Label-free health of an embedding, and kNN accuracy when a few labels exist.

- `rankme`: effective rank of the embedding matrix (Roy & Vetterli 2007), exp of the entropy of
  its normalised singular values; Garrido et al. 2023 ("RankMe") show it tracks downstream
  accuracy across SSL runs without labels. A collapsing run drops towards 1.
- `uniformity`: log E exp(-2 |u - v|^2) over pairs of L2-normalised embeddings (Wang & Isola 2020);
  lower is more uniform, 0 means every image maps to one point.
- `knn_accuracy` / `knn_balanced_accuracy`: leave-one-out weighted kNN (cosine, k neighbours,
  votes exp(s / 0.07), Wu et al. 2018) over a small labelled folder.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def effective_rank(x: torch.Tensor, eps: float = 1e-12) -> float:
    """`x`: `(N, D)` embeddings (centred here). Between 1 and min(N, D)."""
    s = torch.linalg.svdvals(x.double() - x.double().mean(0, keepdim=True))
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """`x`: `(N, D)`; Wang & Isola's uniformity loss of the normalised embeddings."""
    z = F.normalize(x.double(), dim=1)
    d2 = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * d2, dim=0) - math.log(d2.numel()))


def knn_leave_one_out(x: torch.Tensor, labels: torch.Tensor, *, k: int = 20,
                      temperature: float = 0.07) -> dict[str, float]:
    """Each image classified by the weighted vote of its k nearest others (cosine similarity)."""
    z = F.normalize(x.double(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    k = min(k, len(z) - 1)
    top, idx = sim.topk(k, dim=1)
    n_classes = int(labels.max()) + 1
    votes = torch.zeros(len(z), n_classes, dtype=torch.float64)
    votes.scatter_add_(1, labels[idx], torch.exp(top / temperature))
    pred = votes.argmax(1)
    hit = (pred == labels).double()
    per_class = [hit[labels == c].mean() for c in range(n_classes) if (labels == c).any()]
    return {"knn_accuracy": float(hit.mean()), "knn_balanced_accuracy": float(torch.stack(per_class).mean())}


def embedding_metrics(x: torch.Tensor, labels: torch.Tensor | None, *, k: int = 20) -> dict[str, float]:
    """All monitoring numbers of `(N, D)` embeddings; kNN only with labels (>= 0)."""
    out = {"rankme": effective_rank(x), "uniformity": uniformity(x), "feature_std": float(
        F.normalize(x.double(), dim=1).std(0).mean())}
    if labels is not None and (labels >= 0).all() and len(labels) > 1:
        out.update(knn_leave_one_out(x, labels, k=k))
    return out
