"""RUN/pretrain_curves.png: the SSL loss and the monitoring numbers per epoch, one panel each."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import atomic_path

PANELS = (("train_loss", "SSL loss"), ("rankme", "effective rank (higher: no collapse)"),
          ("uniformity", "uniformity (lower: spread out)"), ("knn_accuracy", "kNN accuracy (labelled folder)"))


def plot_curves(metrics_jsonl: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Draw the panels whose metric appears in `metrics_jsonl`; None when there are no rows."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    panels = [(k, title) for k, title in PANELS if any(k in r for r in rows)]
    if not rows or not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out
