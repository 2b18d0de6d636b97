"""Run logging: a rich progress bar per epoch, one line per epoch on the console, metrics.jsonl,
curves.png (engine/curves.py), and TensorBoard scalars when tensorboard is installed."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..files import json_default

console = Console(stderr=True)


def _scalars(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class RunLogger:
    def __init__(self, out_dir: str | Path | None, *, enabled: bool = True, tensorboard: bool = True,
                 show_progress: bool = True) -> None:
        self.enabled, self.show_progress = enabled, show_progress
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.tb = None
        self.curves = None
        if enabled and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            from .curves import CurvesWriter

            self.curves = CurvesWriter(self.out_dir)
            if tensorboard:
                with contextlib.suppress(Exception):
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    @contextlib.contextmanager
    def epoch_progress(self, epoch: int, epochs: int) -> Iterator[Any]:
        if not (self.enabled and self.show_progress):
            yield None
            return
        cols = [TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.1f} img/s"), TimeRemainingColumn()]
        with Progress(*cols, console=console, transient=True) as bar:
            tid = bar.add_task("train", total=None, loss=float("nan"), ips=0.0)

            def update(done: int, total: int, loss: float, ips: float) -> None:
                bar.update(tid, completed=done, total=total, loss=loss, ips=ips)

            yield update

    def log_epoch(self, row: dict, *, monitor: str) -> None:
        if not self.enabled:
            return
        shown = _scalars(row)
        speed = {"images_per_s", "epoch_time_s", "lr", "epoch"}
        keys = list(dict.fromkeys(["train_loss", monitor] + [k for k in shown if k not in speed]))
        text = "  ".join(f"{k} {shown[k]:.4g}" for k in keys[:5] if k in shown)
        console.print(f"epoch {row['epoch']:>3}  {text}  [dim]{shown.get('images_per_s', 0):.0f} img/s "
                      f"{shown.get('epoch_time_s', 0):.1f}s[/dim]", soft_wrap=True)
        if self.out_dir is not None:
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row, default=json_default) + "\n")
        if self.curves is not None:
            self.curves.update(row, monitor=monitor)
        if self.tb is not None:
            for k, v in _scalars(row).items():
                self.tb.add_scalar(k, v, row["epoch"])

    def read_history(self, upto_epoch: int) -> list[dict]:
        """Rows of metrics.jsonl up to `upto_epoch`; later rows (from an interrupted epoch) are dropped."""
        if self.out_dir is None or not (self.out_dir / "metrics.jsonl").is_file():
            return []
        path = self.out_dir / "metrics.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("epoch", 0) <= upto_epoch]
        if self.enabled:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            if self.curves is not None:
                self.curves.rows = list(rows)
        return rows

    def note(self, text: str) -> None:
        if self.enabled:
            console.print(f"[dim]{text}[/dim]")

    def close(self) -> None:
        if self.curves is not None:
            self.curves.draw()
        if self.tb is not None:
            self.tb.close()
