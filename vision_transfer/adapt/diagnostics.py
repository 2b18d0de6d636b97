"""What a user needs to trust an adapted model: pooled features of both domains, the proxy
A-distance (Ben-David et al. 2007; Ganin et al. 2016), a 2-D PCA picture of source vs target
before and after, and soft neighbourhood density (SND, Saito et al. 2021), a label-free score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .trainer import pooled


def source_paths(dataset: Dataset) -> list[Path]:
    """Image paths of a task dataset (ImageDataset.paths, or SegmentationDataset.items)."""
    paths = getattr(dataset, "paths", None)
    if paths is None:
        paths = [item[0] for item in getattr(dataset, "items", [])]
    return [Path(p) for p in paths]


def subsample(paths: list[Path], limit: int, seed: int) -> list[Path]:
    if len(paths) <= limit:
        return list(paths)
    idx = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
    return [paths[i] for i in sorted(idx)]


@torch.inference_mode()
def pooled_features(backbone: nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int = 64,
                    num_workers: int = 0) -> np.ndarray:
    """`(N, C)` float32 global-average-pooled deepest features, backbone in eval mode."""
    from .data import _images_only

    was = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_images_only)
    out = [pooled(backbone(x.to(device))).cpu() for x in loader]
    backbone.train(was)
    return torch.cat(out).numpy()


def proxy_a_distance(fs: np.ndarray, ft: np.ndarray, *, seed: int = 0) -> float:
    """2 (1 - 2 eps), eps the held-out error of a linear source-vs-target classifier on balanced,
    standardised features (half to fit, half to score): 0 = indistinguishable, 2 = separable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(fs), len(ft))
    rng = np.random.default_rng(seed)
    x = np.concatenate([fs[rng.permutation(len(fs))[:n]], ft[rng.permutation(len(ft))[:n]]])
    y = np.r_[np.ones(n), np.zeros(n)]
    xa, xb, ya, yb = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(xa, ya)
    eps = 1.0 - clf.score(xb, yb)
    return float(2.0 * (1.0 - 2.0 * eps))


def snd(logits: torch.Tensor, *, temperature: float = 0.05) -> float:
    """Soft neighbourhood density of target predictions `(N, K)` (higher = better clustered,
    Saito et al. 2021): the mean entropy of each sample's softmax over its cosine similarities
    to the others (self excluded) divided by `temperature`."""
    p = torch.nn.functional.normalize(logits.float().softmax(1), dim=1)
    sim = p @ p.T / temperature
    sim.fill_diagonal_(float("-inf"))
    q = sim.softmax(1)
    return float(-(q * torch.log(q.clamp_min(1e-12))).sum(1).mean())


def embedding_plot(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray] | None,
                   path: str | Path, *, pads: tuple[float, float | None] = (float("nan"), None)) -> Path:
    """PCA to 2-D of source (blue) and target (orange) features, before | after, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    panels = [("before", before, pads[0])] + ([("after", after, pads[1])] if after is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), squeeze=False)
    for ax, (name, (fs, ft), pad) in zip(axes[0], panels):
        z = PCA(n_components=2, random_state=0).fit_transform(np.concatenate([fs, ft]))
        ax.scatter(*z[: len(fs)].T, s=6, alpha=0.5, label=f"source ({len(fs)})")
        ax.scatter(*z[len(fs):].T, s=6, alpha=0.5, label=f"target ({len(ft)})")
        ax.set_title(f"{name} adaptation - proxy A-distance {pad:.2f}" if pad is not None else name)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("pooled backbone features, PCA to 2-D")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


__all__ = ["embedding_plot", "pooled_features", "proxy_a_distance", "snd", "source_paths", "subsample"]
