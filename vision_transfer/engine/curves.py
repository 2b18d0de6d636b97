"""`curves.png`: how a run went, one picture per run folder, redrawn as training goes.

Left: the training loss per epoch (and any validation loss). Right: the monitored metric, the
learning rate on a second axis. Both mark the best epoch. Drawn with matplotlib's Agg backend
(no display needed) and written atomically, so a viewer that reloads the file mid-run never sees
half a PNG. A redraw costs ~0.2 s: `CurvesWriter` skips redraws closer than `min_interval_s`
and closer than ten times the last redraw's cost (a cached-feature probe runs many sub-second
epochs: the plot stays under ~10 % of its time), and always draws the last epoch on `close`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from ..files import atomic_path


def best_epoch(rows: list[dict], monitor: str) -> int | None:
    """The 1-based epoch with the best `monitor` (lowest for a loss, else highest)."""
    scored = [(r[monitor], r["epoch"]) for r in rows if _finite(r.get(monitor))]
    if not scored:
        return None
    pick = min if monitor.endswith("loss") else max
    return pick(scored, key=lambda x: x[0])[1]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], float(r[key])) for r in rows if _finite(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(rows: list[dict], path: str | Path, *, monitor: str, title: str | None = None) -> Path:
    """Draw `rows` (metrics.jsonl rows: `epoch`, `train_loss`, `lr`, the metrics) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    best = best_epoch(rows, monitor)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    loss_keys = ["train_loss"] + sorted(k for k in {k for r in rows for k in r}
                                        if k.endswith("loss") and k not in ("train_loss", monitor))
    for key in loss_keys:
        x, y = _series(rows, key)
        if x:
            ax_loss.plot(x, y, marker="o", ms=3, label="val loss" if key == "loss" else key.replace("_", " "))
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend(fontsize=8)
    x, y = _series(rows, monitor)
    if monitor != "train_loss" and x:
        ax_metric.plot(x, y, marker="o", ms=3, color="#2a7a2a", label=monitor)
        ax_metric.set_ylabel(monitor)
    ax_metric.set(xlabel="epoch", title=f"{monitor} and learning rate")
    lr_x, lr_y = _series(rows, "lr")
    if lr_x:
        ax_lr = ax_metric.twinx()
        ax_lr.plot(lr_x, lr_y, color="grey", ls="--", lw=1, label="lr (right)")
        ax_lr.set_ylabel("lr (head)", color="grey")
        ax_lr.tick_params(axis="y", colors="grey", labelsize=7)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if best is not None:
        for ax in (ax_loss, ax_metric):
            ax.axvline(best, color="#c0392b", lw=1, alpha=0.7)
        value = next(r[monitor] for r in rows if r["epoch"] == best)
        ax_metric.annotate(f"best: epoch {best}\n{monitor} {value:.4g}", xy=(0.02, 0.97), xycoords="axes fraction",
                           va="top", fontsize=8, color="#c0392b")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


class CurvesWriter:
    """Redraws `out_dir/curves.png` after epochs, at most once per `min_interval_s`."""

    def __init__(self, out_dir: str | Path, *, min_interval_s: float = 2.0) -> None:
        self.path = Path(out_dir) / "curves.png"
        self.min_interval_s = min_interval_s
        self.rows: list[dict] = []
        self.monitor = "train_loss"
        self._last, self._cost = -math.inf, 0.0
        self._dirty = False

    def update(self, row: dict, *, monitor: str) -> None:
        self.rows.append(row)
        self.monitor, self._dirty = monitor, True
        if time.monotonic() - self._last >= max(self.min_interval_s, 10 * self._cost):
            self.draw()

    def draw(self) -> None:
        if not self.rows or not self._dirty:
            return
        t0 = time.monotonic()
        try:
            plot_curves(self.rows, self.path, monitor=self.monitor)
        except Exception as e:  # noqa: BLE001 - a plot must never stop a training run
            from .logging import console

            console.print(f"[yellow]curves.png not written: {e}[/yellow]")
        self._last, self._dirty = time.monotonic(), False
        self._cost = self._last - t0
