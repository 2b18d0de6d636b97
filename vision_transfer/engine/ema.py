"""`train.ema=DECAY`: an exponential moving average of the weights, evaluated and checkpointed
beside the raw weights (torchvision's classification references, `--model-ema`; Polyak averaging).

`EMACallback` plugs into `fit` through its callbacks: `on_step()` (after every optimizer step)
updates the average with `torch.optim.swa_utils.AveragedModel` and `get_ema_multi_avg_fn(decay)`,
BatchNorm statistics included (`use_buffers=True`); the per-epoch call evaluates the averaged
model on the validation split, appends a row to `ema_metrics.jsonl` and writes
`checkpoints/ema_best.pt` when its monitored metric improves (`ema_last.pt` every epoch). Both
load like `best.pt` (`vt eval --checkpoint .../ema_best.pt`).

What `best.pt` holds does not change: the raw weights' best epoch. summary.json's `"ema"` entry
says which of the two scored better, so a user picks with a measurement in hand. The average
starts from the first step's weights; a resumed run restarts it from the resumed weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from ..files import json_default
from ..task import Task
from .checkpoint import save_atomic
from .device import Runtime
from .loop import _better


class EMACallback:
    def __init__(self, model: nn.Module, task: Task, *, decay: float, val_data: Dataset | None, classes: list[str],
                 runtime: Runtime, batch_size: int, monitor: str, export_model: nn.Module | None = None,
                 out_dir: str | Path | None = None, checkpoint_meta: dict | None = None,
                 num_workers: int | None = None) -> None:
        self.model, self.task, self.decay, self.rt = model, task, decay, runtime
        self.export_model = export_model or model
        self.val_data, self.classes, self.batch_size, self.monitor = val_data, classes, batch_size, monitor
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta, self.num_workers = checkpoint_meta or {}, num_workers
        self.ema: AveragedModel | None = None
        self.loader = None
        self.best: dict[str, Any] = {}
        self.history: list[dict] = []

    def on_step(self) -> None:
        if self.ema is None:   # created lazily: by now fit has moved the model to its device and layout
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        self.ema.update_parameters(self.model)

    def __call__(self, epoch: int, row: dict) -> None:
        if self.ema is None or not self.rt.is_main:
            return
        metrics = self._evaluate() if self.val_data is not None else {}
        value = metrics.get(self.monitor)
        out = {"epoch": epoch, **metrics}
        self.history.append(out)
        improved = value is not None and _better(value, self.best.get("value"), self.monitor)
        if improved:
            self.best = {"value": value, "epoch": epoch, "metrics": metrics}
        if self.out_dir is not None:
            with open(self.out_dir / "ema_metrics.jsonl", "a") as f:
                f.write(json.dumps(out, default=json_default) + "\n")
            ckpt = {**self.meta, "model": self.export_state(), "epoch": epoch, "metrics": metrics,
                    "ema_decay": self.decay}
            save_atomic(ckpt, self.out_dir / "checkpoints" / "ema_last.pt")
            if improved or self.val_data is None:
                save_atomic(ckpt, self.out_dir / "checkpoints" / "ema_best.pt")

    def _evaluate(self) -> dict:
        from .loop import evaluate, make_loader, public_metrics

        if self.loader is None:
            self.loader = make_loader(self.val_data, self.task, batch_size=self.batch_size, train=False, seed=0,
                                      rt=self.rt, num_workers=0)
        return public_metrics(evaluate(self.ema.module, self.task, self.loader, device=self.rt.device,
                                       classes=self.classes))

    def export_state(self) -> dict[str, torch.Tensor]:
        """The export model's state dict (CPU) with the averaged tensors in place of the trained
        ones (a probe on cached features trains the head only: the backbone's are unchanged)."""
        assert self.ema is not None
        averaged = dict(zip((id(t) for t in _tensors(self.model)), _tensors(self.ema.module)))
        state = self.export_model.state_dict(keep_vars=True)
        return {k: averaged.get(id(v), v).detach().to("cpu", copy=True) for k, v in state.items()}

    def summary(self, raw_best: dict, monitor: str) -> dict:
        """What summary.json records about the EMA."""
        if not self.best:
            return {"decay": self.decay}
        raw = raw_best.get(monitor)
        return {"decay": self.decay, "best_epoch": self.best["epoch"], "metrics": self.best["metrics"],
                "checkpoint": "checkpoints/ema_best.pt",
                "better_than_raw": bool(raw is not None and _better(self.best["value"], raw, monitor)
                                        and self.best["value"] != raw)}


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]
