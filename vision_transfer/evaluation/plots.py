"""Plots for evaluation reports.

Line charts (precision-recall curves) are written as inline SVG by hand: no matplotlib import on
the model-free `vt eval detection` path, and the HTML report stays small and self-contained.
The confusion matrix is a PNG drawn with matplotlib (imported lazily, Agg backend).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..files import atomic_path

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def svg_line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "",
                   xlabel: str = "recall", ylabel: str = "precision", width: int = 260, height: int = 220,
                   xlim: tuple[float, float] = (0.0, 1.0), ylim: tuple[float, float] = (0.0, 1.0)) -> str:
    """An `<svg>` element with one polyline per series.

    series: `{label: (x values, y values)}`, equal lengths; non-finite points and points below
    `ylim[0]` (e.g. COCO's -1 for "undefined") break the line. Labels go into a legend.
    """
    left, right, top, bottom = 38, 8, 22 if title else 8, 34
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - xlim[0]) / (xlim[1] - xlim[0]) * pw

    def py(y: float) -> float:
        return top + ph - (y - ylim[0]) / (ylim[1] - ylim[0]) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">']
    if title:
        out.append(f'<text x="{left + pw / 2:.1f}" y="14" text-anchor="middle" font-size="11" '
                   f'font-weight="bold">{escape(title)}</text>')
    for i in range(6):  # grid and tick labels at 0, .2, ..., 1 of each axis range
        fx = xlim[0] + i * (xlim[1] - xlim[0]) / 5
        fy = ylim[0] + i * (ylim[1] - ylim[0]) / 5
        out.append(f'<line x1="{px(fx):.1f}" y1="{top}" x2="{px(fx):.1f}" y2="{top + ph}" stroke="#e5e5e5"/>'
                   f'<line x1="{left}" y1="{py(fy):.1f}" x2="{left + pw}" y2="{py(fy):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{px(fx):.1f}" y="{top + ph + 11}" text-anchor="middle">{fx:.1f}</text>'
                   f'<text x="{left - 3}" y="{py(fy) + 3:.1f}" text-anchor="end">{fy:.1f}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{escape(xlabel)}</text>'
               f'<text transform="translate(10 {top + ph / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    for i, (label, (xs, ys)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        for run in _runs(xs, ys, ylim[0]):
            pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        ly = top + ph - 6 - 12 * (len(series) - 1 - i)  # legend bottom-left: empty for PR curves
        out.append(f'<line x1="{left + 5}" y1="{ly - 3}" x2="{left + 17}" y2="{ly - 3}" stroke="{color}" '
                   f'stroke-width="2"/><text x="{left + 20}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _runs(xs: Sequence[float], ys: Sequence[float], ymin: float) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y) and y >= ymin:
            runs[-1].append((float(x), float(y)))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def confusion_matrix_png(matrix: Sequence[Sequence[float]] | Any, classes: Sequence[str], path: str | os.PathLike,
                         *, title: str = "Confusion matrix") -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted class) to a PNG file.

    Colours are row-normalised (the recall of each true class spreads over the predictions);
    the cells show the raw counts when there are at most 30 classes. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {cm.shape}, expected ({n}, {n}) for {n} classes")
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1e-12)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in classes], rotation=60 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                v = cm[i, j]
                ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
