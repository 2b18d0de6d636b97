"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; fastai's
`lr_find`, Lightning's `Tuner.lr_find`).

A short training run whose learning rate grows exponentially from `start_lr` to `end_lr`, one
step per batch, on the user's data with the optimizer groups `fit` would build for the strategy
(frozen stages stay frozen; backbone groups keep their `backbone_lr_mult` / `layer_lr_decay`
ratios to the head). The loss is smoothed with a bias-corrected exponential average and the sweep
stops once it exceeds `diverge` x its minimum. Weights, BatchNorm statistics and RNG state are
restored afterwards, so a run that follows (`train.lr=auto`) starts from the same model.

The suggestion is `min / 10`: a tenth of the head lr at which the smoothed loss is lowest
(fastai's `lr_min` rule). The steepest-descent point (Lightning's rule) is reported too; on short,
noisy sweeps of small datasets it jumps between runs, which is why it is not the default.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import VTError
from ..files import atomic_path, write_json
from ..task import Task
from .device import Runtime
from ..config import TransferConfig
from .loop import make_loader
from .optim import build_optimizer
from .transfer import apply_plan, param_groups, plan_transfer, train_mode

SUGGESTION_RULE = "min/10"


@dataclass
class LRFindResult:
    """lrs: the head lr of each step; losses: raw batch losses; smoothed: the bias-corrected EMA."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    min_loss_lr: float
    steepest_lr: float | None
    diverged: bool
    rule: str = SUGGESTION_RULE
    sweep: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def suggest(lrs: list[float], smoothed: list[float], *, skip_start: int = 5) -> tuple[float, float, float | None]:
    """`(min / 10, lr at the minimum, steepest-descent lr)` of a smoothed sweep."""
    if len(lrs) < 2:
        raise VTError("the lr range test ran fewer than 2 steps: give more training images or lr_find.num_steps")
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    lo = min(skip_start, max(0, i_min - 1))
    steepest = None
    if i_min - lo >= 2:   # the steepest fall in loss per unit log-lr, before the minimum
        slopes = [(smoothed[i + 1] - smoothed[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
                  for i in range(lo, i_min)]
        steepest = lrs[lo + min(range(len(slopes)), key=slopes.__getitem__)]
    return lrs[i_min] / 10, lrs[i_min], steepest


def lr_range_test(model: nn.Module, task: Task, train_data: Dataset, *, runtime: Runtime, batch_size: int,
                  transfer: TransferConfig | None = None, weight_decay: float = 1e-4, optimizer: str = "adamw",
                  start_lr: float = 1e-7, end_lr: float = 1.0, num_steps: int = 100, smooth: float = 0.98,
                  diverge: float = 4.0, seed: int = 0, num_workers: int | None = None,
                  progress: bool = True) -> LRFindResult:
    """Sweep the head lr from `start_lr` to `end_lr` over `num_steps` batches (cycling the data)."""
    if not 0 < start_lr < end_lr:
        raise VTError(f"lr_find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    transfer = transfer or TransferConfig()
    dev = runtime.device
    model.to(dev)
    saved = copy.deepcopy(model.state_dict())
    grads = {id(p): p.requires_grad for p in model.parameters()}
    rng = torch.get_rng_state()
    try:
        opt = _optimizer(model, transfer, lr=start_lr, weight_decay=weight_decay, name=optimizer)
        loader = make_loader(train_data, task, batch_size=batch_size, train=True, seed=seed, rt=runtime,
                             num_workers=num_workers)
        lrs, losses, smoothed, diverged = _sweep(model, task, loader, opt, dev, start_lr=start_lr, end_lr=end_lr,
                                                 num_steps=num_steps, smooth=smooth, diverge=diverge,
                                                 progress=progress)
    finally:
        model.load_state_dict(saved, strict=False)   # bn=frozen may have swapped BatchNorm for its frozen twin
        for p in model.parameters():
            p.requires_grad_(grads.get(id(p), p.requires_grad))
            p.grad = None
        torch.set_rng_state(rng)
    sug, at_min, steep = suggest(lrs, smoothed)
    return LRFindResult(lrs=lrs, losses=losses, smoothed=smoothed, suggestion=sug, min_loss_lr=at_min,
                        steepest_lr=steep, diverged=diverged,
                        sweep={"start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps,
                               "batch_size": batch_size, "smooth": smooth, "diverge": diverge})


def apply_epoch0_plan(model: nn.Module, t: TransferConfig) -> bool:
    """Freeze what `fit` freezes at epoch 0 under `t`; False when `model` holds no backbone
    (e.g. a head on cached features), which then trains whole."""
    from ..task import find_backbone
    from .loop import _has_backbone

    if not _has_backbone(model):
        return False
    if t.strategy == "lp_ft" and t.probe_epochs is None:
        t = t.model_copy(update={"probe_epochs": 1})   # epoch 0 of lp_ft is a probe whatever its length
    apply_plan(model, plan_transfer(t, num_stages=len(find_backbone(model).stages), epoch=0))
    return True


def _optimizer(model: nn.Module, t: TransferConfig, *, lr: float, weight_decay: float, name: str):
    """The groups `fit` builds at epoch 0, each remembering its ratio to the head's `lr`."""
    if apply_epoch0_plan(model, t):
        groups = param_groups(model, lr=lr, weight_decay=weight_decay, backbone_lr_mult=1.0 if t.backbone_lr_mult is None else t.backbone_lr_mult,
                              layer_lr_decay=t.layer_lr_decay)
    else:
        groups = [{"params": list(model.parameters()), "lr": lr, "weight_decay": weight_decay}]
    opt = build_optimizer(groups, name=name, lr=lr)
    for g in opt.param_groups:
        g["ratio"] = g["lr"] / lr
    return opt


def _sweep(model, task, loader, opt, dev, *, start_lr, end_lr, num_steps, smooth, diverge, progress):
    from rich.progress import Progress

    from .logging import console

    factor = (end_lr / start_lr) ** (1 / max(1, num_steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, best, diverged, step = 0.0, math.inf, False, 0
    train_mode(model)
    with Progress(console=console, transient=True, disable=not progress) as bar:
        tid = bar.add_task("lr range test", total=num_steps)
        while step < num_steps and not diverged:
            for batch in loader:
                lr = min(start_lr * factor ** step, end_lr)   # no float overshoot past the sweep
                for g in opt.param_groups:
                    g["lr"] = lr * g["ratio"]
                batch = task.to_device(batch, dev)
                loss = task.train_step(model, batch)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                avg = smooth * avg + (1 - smooth) * value
                s = avg / (1 - smooth ** (step + 1))
                lrs.append(lr), losses.append(value), smoothed.append(s)
                step += 1
                bar.advance(tid)
                best = min(best, s)
                if not math.isfinite(s) or (step > 5 and s > diverge * best):
                    diverged = True
                if diverged or step >= num_steps:
                    break
    # a non-finite tail carries no information for the suggestion
    while smoothed and not math.isfinite(smoothed[-1]):
        lrs.pop(), losses.pop(), smoothed.pop()
    return lrs, losses, smoothed, diverged


def plot_lr_find(result: LRFindResult, path: str | Path, *, title: str = "learning-rate range test") -> Path:
    """`lr_find.png`: raw and smoothed loss against the head lr (log scale), the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    ax.plot(result.lrs, result.losses, color="#9bb7d4", lw=0.8, label="batch loss")
    ax.plot(result.lrs, result.smoothed, color="#1f4e79", lw=1.8, label="smoothed")
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite[: max(1, len(finite) // 2)] + [min(finite) * 1.5])
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.3 * (hi - lo + 1e-9))
    ax.axvline(result.suggestion, color="#c0392b", lw=1.5, label=f"suggestion ({result.rule}) {result.suggestion:.2g}")
    ax.axvline(result.min_loss_lr, color="grey", ls=":", lw=1, label=f"minimum {result.min_loss_lr:.2g}")
    if result.steepest_lr:
        ax.axvline(result.steepest_lr, color="#2a7a2a", ls="--", lw=1, label=f"steepest {result.steepest_lr:.2g}")
    ax.set(xlabel="learning rate (head)", ylabel="training loss", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def write_lr_find(result: LRFindResult, out_dir: str | Path) -> Path:
    """`out_dir/lr_find.png` and `out_dir/lr_find.json`; returns the png's path."""
    out = Path(out_dir)
    write_json(out / "lr_find.json", result.to_dict())
    return plot_lr_find(result, out / "lr_find.png")
