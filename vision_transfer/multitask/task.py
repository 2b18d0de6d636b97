"""Several task heads on one shared backbone, as one `Task` so that the shared `fit` trains them
(AMP, DDP, checkpoints, resume, early stopping, metrics.jsonl): no second training loop.

- `MultiTaskModel`: the registry backbone once (`backbone`) and each entry's own task model in
  `heads[NAME]`, built by that task's plugin on the same backbone object; `forward(batch)` runs
  each entry's `Task.train_step` on its part of the batch and returns the weighted sum (fixed
  weights, or Kendall et al. 2018's uncertainty weighting: `exp(-s) * w * L + s / 2` with one
  learned log-variance `s` per entry, trained by the same optimizer).
- `RoundRobinData` (every step a batch of every entry; an epoch is the longest entry, shorter ones
  cycle) and `ProportionalData` (all entries' samples in one shuffled pool: mixed batches, each
  entry as often as its size). Their items are lists of `(entry name, sample)`; `collate` groups
  them per entry with the entry task's own collate.
- `MultiTask.evaluate` runs each entry's own `evaluate` on its validation split and prefixes the
  metrics with the entry name (`cells/accuracy`, `boxes/AP50`, `masks/mIoU`); `mean_score` is the
  mean of each head's monitored metric (what picks best.pt unless `multitask.monitor=NAME/METRIC`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset

from ..backbones.base import Backbone
from ..errors import VTError
from ..task import Task

MEAN_SCORE = "mean_score"
LOG_VAR_LR_MULT = 10.0   # the learned log-variances' lr, as a multiple of train.lr (engine param_groups)


@dataclass
class Entry:
    """One head of a multitask run: its name, task plugin, classes, loss weight and (when
    training) its resolved single-task config and datasets."""

    name: str
    task: Task
    classes: list[str]
    weight: float = 1.0
    cfg: Any = None
    train: Dataset | None = None
    val: Dataset | None = None
    meta: dict = field(default_factory=dict)   # the single-task checkpoint metadata of this head


class HeadDict(nn.ModuleDict):
    """A ModuleDict whose keys may be any entry name, `type` or `train` too (nn.Module refuses keys
    that shadow its attributes; here they are only reached as `heads[name]`)."""

    def __setitem__(self, key: str, module: nn.Module) -> None:
        self._modules[key] = module


class MultiTaskModel(nn.Module):
    """The shared backbone and one task model per entry (each holds the same backbone object)."""

    def __init__(self, backbone: Backbone, heads: dict[str, nn.Module], *, tasks: dict[str, Task],
                 weights: dict[str, float], balance: str = "fixed") -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = HeadDict(heads)
        self.tasks, self.loss_weights, self.balance = dict(tasks), dict(weights), balance
        self.log_vars = nn.Parameter(torch.zeros(len(heads))) if balance == "uncertainty" else None
        # each head holds the one backbone: a state dict stores its tensors once (under backbone.*)
        self.register_state_dict_post_hook(_drop_aliases)
        self.register_load_state_dict_pre_hook(_fill_aliases)
        if self.log_vars is not None:
            # one scalar per head: AdamW moves it by about the lr per step, so at the heads' lr a
            # fine-tune of a few hundred steps would leave the weights equal; 10x lets them move
            self.log_vars.vt_lr_mult = LOG_VAR_LR_MULT

    def aliases(self) -> dict[str, str]:
        """{key under heads.*: the backbone.* key of the same tensor} (the shared encoder's)."""
        owner = {id(t): f"backbone.{k}" for k, t in self.backbone.state_dict(keep_vars=True).items()}
        return {f"heads.{k}": owner[id(t)] for k, t in self.heads.state_dict(keep_vars=True).items() if id(t) in owner}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`batch`: {entry name: that entry's batch} (entries may be missing) -> {"loss", "NAME/loss"}."""
        total: torch.Tensor | float = 0.0
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.heads):
            if name not in batch:
                continue
            loss = self.tasks[name].train_step(self.heads[name], batch[name])["loss"]
            out[f"{name}/loss"] = loss.detach()
            w = self.loss_weights[name]
            if self.log_vars is not None:
                s = self.log_vars[i]
                total = total + w * torch.exp(-s) * loss + 0.5 * s
            else:
                total = total + w * loss
        if not isinstance(total, torch.Tensor):
            raise VTError("a multitask batch held no entry's samples")
        return {"loss": total, **out}

    def train(self, mode: bool = True) -> MultiTaskModel:
        """A head that keeps the backbone's BatchNorm in eval (a detector on pretrained weights:
        batches of a few images would wreck the statistics) keeps it so for every head, whatever
        the order the heads are visited in."""
        super().train(mode)
        if mode and any(getattr(h, "freeze_backbone_bn", False) for h in self.heads.values()):
            for m in self.backbone.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def _drop_aliases(module: MultiTaskModel, state: dict, prefix: str, _meta: Any) -> None:
    for k in module.aliases():
        state.pop(prefix + k, None)


def _fill_aliases(module: MultiTaskModel, state: dict, prefix: str, *_: Any) -> None:
    for k, owner in module.aliases().items():
        if prefix + k not in state and prefix + owner in state:
            state[prefix + k] = state[prefix + owner]


class _EpochData(Dataset):
    def __init__(self, parts: dict[str, Dataset]) -> None:
        self.parts = parts
        # shared memory: persistent loader workers see the epoch the main process set
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)
        for ds in self.parts.values():
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)


class RoundRobinData(_EpochData):
    """Item i: one sample of every entry; an epoch is the longest entry, shorter ones cycle (an
    offset per epoch, so every sample of a short entry is seen as often as the others)."""

    def __len__(self) -> int:
        return max(len(ds) for ds in self.parts.values())

    def __getitem__(self, i: int) -> list[tuple[str, dict]]:
        shift = int(self._epoch) * len(self)
        return [(name, ds[(i + shift) % len(ds)]) for name, ds in self.parts.items()]


class ProportionalData(_EpochData):
    """All entries' samples in one pool: a shuffled batch holds each entry as often as its size."""

    def __init__(self, parts: dict[str, Dataset]) -> None:
        super().__init__(parts)
        self.index = [(name, j) for name, ds in parts.items() for j in range(len(ds))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> list[tuple[str, dict]]:
        name, j = self.index[i]
        return [(name, self.parts[name][j])]


class ValSplits(Dataset):
    """What `fit` gets as validation data: the entries' own splits, evaluated one by one."""

    def __init__(self, parts: dict[str, Dataset]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.parts.values())

    def __getitem__(self, i: int) -> Any:
        raise TypeError("ValSplits is evaluated per entry by MultiTask.evaluate")


class MultiTask(Task):
    """The `multitask` task: built per run with its entries (`vision_transfer.multitask.run`)."""

    name = "multitask"
    monitor = MEAN_SCORE
    default_head = "default"
    default_lr = 1e-3

    def __init__(self, entries: Sequence[Entry] = (), *, monitor: str = MEAN_SCORE, num_workers: int | None = 0,
                 seed: int = 0) -> None:
        self.entries = {e.name: e for e in entries}
        self.monitor, self.num_workers, self.seed = monitor, num_workers, seed

    def resolve_head(self, head: Any) -> Any:
        return head   # each entry resolves its own head

    def collate(self, samples: Sequence[list[tuple[str, dict]]]) -> dict[str, Any]:
        groups: dict[str, list[dict]] = {}
        for item in samples:
            for name, sample in item:
                groups.setdefault(name, []).append(sample)
        return {name: self.entries[name].task.collate(group) for name, group in groups.items()}

    def batch_size_of(self, batch: Any) -> int:
        return sum(self.entries[name].task.batch_size_of(b) for name, b in batch.items())

    def to_device(self, batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
        return {name: self.entries[name].task.to_device(b, device, channels_last=channels_last)
                for name, b in batch.items()}

    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return model(batch)   # through the (maybe DDP-wrapped) model: the weighting is inside forward

    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device, classes: list[str],
                 amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
        from ..engine.device import Runtime
        from ..engine.loop import make_loader

        splits: ValSplits = loader.dataset
        out: dict[str, Any] = {}
        scores = []
        for name, ds in splits.parts.items():
            e = self.entries[name]
            sub = make_loader(ds, e.task, batch_size=loader.batch_size, train=False, seed=self.seed,
                              rt=Runtime(device), num_workers=self.num_workers)
            metrics = e.task.evaluate(model.heads[name], sub, device=device, classes=e.classes, amp_dtype=amp_dtype)
            out.update({f"{name}/{k}": v for k, v in metrics.items() if not k.startswith("_")})
            scores.append(float(metrics[e.task.monitor]))
        out[MEAN_SCORE] = sum(scores) / len(scores)
        if self.monitor not in out:
            named = sorted(k for k, v in out.items() if isinstance(v, (int, float)))
            raise VTError(f"multitask.monitor={self.monitor} is not a metric of this run; valid: {', '.join(named)}")
        return out
