"""The training loop as plain functions: `fit`, `train_one_epoch`, `evaluate`.

`fit` owns the things every task shares: loaders (a seeded DistributedSampler even on one
process, so one and several processes see the same global batches), the transfer plan per epoch,
mixed precision, gradient accumulation, atomic checkpoints each epoch, resume, early stopping,
metrics.jsonl and TensorBoard. Tasks supply only `train_step` and `evaluate`.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import VTError
from ..task import Task, find_backbone
from .checkpoint import read_checkpoint, rng_state, save_atomic, set_rng_state
from .device import Runtime, amp_dtype, barrier, broadcast_object, default_num_workers, use_channels_last
from .logging import RunLogger
from .optim import build_optimizer, lr_schedule
from .transfer import LP_FT_LR_MULT, TransferPlan, apply_plan, param_groups, plan_transfer, train_mode


@dataclass
class TransferSettings:
    strategy: str = "finetune"
    freeze_layers: int = 0
    bn: str | None = None
    backbone_lr_mult: float = 1.0
    layer_lr_decay: float | None = None
    unfreeze_every: int = 1
    unfreeze_milestones: list[int] | None = None
    probe_epochs: int | None = None       # lp_ft: None = half the epochs
    finetune_lr_mult: float = LP_FT_LR_MULT   # lp_ft: every lr x this after the probe


@dataclass
class FitResult:
    best_epoch: int
    best_metrics: dict
    last_metrics: dict
    history: list[dict] = field(default_factory=list)
    train_time_s: float = 0.0
    stopped_early: bool = False


def make_loader(dataset: Dataset, task: Task, *, batch_size: int, train: bool, seed: int, rt: Runtime,
                num_workers: int | None = None) -> DataLoader:
    workers = default_num_workers() if num_workers is None else num_workers
    sampler = None
    if train:
        sampler = DistributedSampler(dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      collate_fn=task.collate, pin_memory=rt.device.type == "cuda",
                      drop_last=False, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def train_one_epoch(model: nn.Module, task: Task, loader: DataLoader, *, optimizer: torch.optim.Optimizer,
                    scheduler: Any, rt: Runtime, dtype: torch.dtype | None, channels_last: bool,
                    scaler: torch.amp.GradScaler | None, grad_accum: int = 1, grad_clip: float | None = None,
                    epoch: int = 0, progress: Any = None, sync_every: int = 10,
                    on_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One pass over `loader`; stops with a clear error on a non-finite loss. `on_step()` runs
    after every optimizer step (e.g. an EMA of the weights, engine/ema.py).

    The running loss stays on the device and is read (a host sync) only every `sync_every` steps
    and at the end, so a GPU is never stalled once per step just to print a number."""
    train_mode(model)
    running = torch.zeros((), dtype=torch.float64, device=rt.device)
    total, seen, checked, t0 = 0.0, 0, 0, time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    n = len(loader)
    for step, batch in enumerate(loader):
        batch = task.to_device(batch, rt.device, channels_last=channels_last)
        with torch.autocast(rt.device.type, dtype=dtype, enabled=dtype is not None):
            losses = task.train_step(model, batch)
        loss = losses["loss"]
        (scaler.scale(loss / grad_accum) if scaler else loss / grad_accum).backward()
        if (step + 1) % grad_accum == 0 or step + 1 == n:
            if scaler:
                scaler.unscale_(optimizer)
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if on_step is not None:
                on_step()
        bs = task.batch_size_of(batch)
        running += loss.detach().double() * bs
        seen += bs
        if (step + 1) % sync_every == 0 or step + 1 == n:
            total = running.item()
            if not math.isfinite(total):
                lr = optimizer.param_groups[0]["lr"]
                raise VTError(f"the loss became {total} at epoch {epoch + 1}, between steps {checked + 1} and "
                              f"{step + 1}: lower train.lr (the head's lr was {lr:.2g}) or check the labels")
            checked = step + 1
            if progress is not None:
                progress(step + 1, n, total / seen, seen * rt.world_size / (time.perf_counter() - t0))
    elapsed = time.perf_counter() - t0
    if rt.distributed:  # the loss of every rank's shard, not rank 0's alone
        sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=rt.device)
        torch.distributed.all_reduce(sums)
        total, seen = sums[0].item(), int(sums[1].item())
    return {"train_loss": total / max(seen, 1), "images_per_s": seen / max(elapsed, 1e-9),
            "epoch_time_s": elapsed}


def evaluate(model: nn.Module, task: Task, loader: DataLoader, *, device: torch.device, classes: list[str],
             dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The task's metrics over the whole loader, in eval and inference mode."""
    model = model.module if hasattr(model, "module") else model
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        metrics = task.evaluate(model, loader, device=device, classes=classes, amp_dtype=dtype)
    model.train(was_training)
    return metrics


def public_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the private entries (keys starting with "_", e.g. a detector's raw
    predictions) that `Task.evaluate` may return for `Task.write_artifacts`."""
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def _better(a: float, b: float | None, monitor: str) -> bool:
    if b is None:
        return True
    return a < b if monitor.endswith("loss") else a > b


def fit(model: nn.Module, task: Task, *, train_data: Dataset, val_data: Dataset | None, classes: list[str],
        epochs: int, batch_size: int, lr: float, weight_decay: float = 1e-4, optimizer: str = "adamw",
        warmup_epochs: float = 1.0, schedule: str = "cosine", transfer: TransferSettings | None = None, runtime: Runtime,
        amp: str = "auto", channels_last: bool | None = None, grad_accum: int = 1, grad_clip: float | None = None,
        early_stopping: int | None = None, seed: int = 0, num_workers: int | None = None,
        out_dir: str | Path | None = None, resume: str | Path | None = None, checkpoint_meta: dict | None = None,
        export_model: nn.Module | None = None, tensorboard: bool = True,
        callbacks: Sequence[Callable[[int, dict], None]] = (), show_progress: bool = True) -> FitResult:
    """Train `model` for `epochs`; returns the best epoch and metrics.

    `export_model` is what checkpoints store when it differs from what trains (a linear probe on
    cached features trains only the head; the checkpoint holds backbone + head).
    `callbacks` are called as `cb(epoch, metrics)` after each epoch (epoch is 1-based); a callback
    with an `on_step()` method has it called after every optimizer step too."""
    rt, transfer = runtime, transfer or TransferSettings()
    export_model = export_model or model
    model.to(rt.device)
    export_model.to(rt.device)
    cl = use_channels_last(rt.device, channels_last)
    if cl:
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(rt.device, amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    num_stages = len(find_backbone(model).stages) if _has_backbone(model) else 0
    plan_for = _planner(transfer, num_stages, epochs)
    if num_stages:
        apply_plan(model, plan_for(0))
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, backbone_lr_mult=transfer.backbone_lr_mult,
                          layer_lr_decay=transfer.layer_lr_decay) if num_stages else \
        [{"params": [p for p in model.parameters()], "lr": lr, "weight_decay": weight_decay, "name": "head"}]
    opt = build_optimizer(groups, name=optimizer, lr=lr)
    per_rank_batch = max(1, batch_size // rt.world_size)
    train_loader = make_loader(train_data, task, batch_size=per_rank_batch, train=True, seed=seed, rt=rt,
                               num_workers=num_workers)
    val_loader = make_loader(val_data, task, batch_size=per_rank_batch, train=False, seed=seed, rt=rt,
                             num_workers=num_workers) if val_data is not None and rt.is_main else None
    steps_per_epoch = math.ceil(len(train_loader) / grad_accum)
    sched = lr_schedule(opt, kind=schedule, total_steps=epochs * steps_per_epoch,
                        warmup_steps=round(warmup_epochs * steps_per_epoch))
    train_model = _wrap_ddp(model, rt)
    monitor = task.monitor if val_data is not None else "train_loss"
    logger = RunLogger(out_dir, enabled=rt.is_main, tensorboard=tensorboard, show_progress=show_progress)
    start, best, best_epoch, best_metrics, history, bad_epochs = 0, None, 0, {}, [], 0
    if resume:
        state = read_checkpoint(resume)
        export_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start, best, best_epoch = state["epoch"], state["best"].get("value"), state["best"].get("epoch", 0)
        best_metrics, bad_epochs, history = state["best"].get("metrics", {}), state["best"].get("bad_epochs", 0), \
            logger.read_history(start)
        logger.note(f"resumed from {resume} after epoch {start}")
    t_start, stopped = time.perf_counter() - sum(h.get("epoch_time_s", 0) for h in history), False
    for epoch in range(start, epochs):
        if num_stages:
            plan = plan_for(epoch)
            apply_plan(model, plan)
            _scale_lrs(opt, sched, plan)
            train_model = _rewrap_if_changed(train_model, model, rt)
        train_loader.sampler.set_epoch(epoch)
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(epoch)
        with logger.epoch_progress(epoch, epochs) as progress:
            stats = train_one_epoch(train_model, task, train_loader, optimizer=opt, scheduler=sched, rt=rt,
                                    dtype=dtype, channels_last=cl, scaler=scaler, grad_accum=grad_accum,
                                    grad_clip=grad_clip, epoch=epoch, progress=progress,
                                    on_step=_step_hook(callbacks))
        metrics: dict[str, Any] = {}
        if val_loader is not None:
            metrics = public_metrics(evaluate(model, task, val_loader, device=rt.device, classes=classes, dtype=dtype))
        metrics = broadcast_object(metrics, rt)
        row = {"epoch": epoch + 1, **stats, "lr": opt.param_groups[0]["lr"], **metrics}
        history.append(row)
        value = row[monitor]
        improved = _better(value, best, monitor)
        if improved:
            best, best_epoch, best_metrics, bad_epochs = value, epoch + 1, metrics or stats, 0
        else:
            bad_epochs += 1
        if rt.is_main:
            logger.log_epoch(row, monitor=monitor)
            if out_dir is not None:
                ckpt = {**(checkpoint_meta or {}), "model": _cpu_state(export_model), "epoch": epoch + 1,
                        "metrics": metrics, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict() if scaler else None, "rng": rng_state(),
                        "best": {"value": best, "epoch": best_epoch, "metrics": best_metrics,
                                 "bad_epochs": bad_epochs, "monitor": monitor}}
                save_atomic(ckpt, Path(out_dir) / "checkpoints" / "last.pt")
                if improved:
                    save_atomic({k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler")},
                                Path(out_dir) / "checkpoints" / "best.pt")
        barrier(rt)
        for cb in callbacks:
            cb(epoch + 1, row)
        if early_stopping and bad_epochs >= early_stopping:
            logger.note(f"early stopping: {monitor} did not improve for {bad_epochs} epochs (best {best:.4f} "
                        f"at epoch {best_epoch})")
            stopped = True
            break
    logger.close()
    return FitResult(best_epoch=best_epoch, best_metrics=best_metrics, last_metrics=history[-1] if history else {},
                     history=history, train_time_s=time.perf_counter() - t_start, stopped_early=stopped)


def _step_hook(callbacks: Sequence[Any]) -> Callable[[], None] | None:
    hooks = [cb.on_step for cb in callbacks if callable(getattr(cb, "on_step", None))]
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def run_all() -> None:
        for h in hooks:
            h()
    return run_all


def _has_backbone(model: nn.Module) -> bool:
    try:
        find_backbone(model)
        return True
    except TypeError:
        return False


def _planner(t: TransferSettings, num_stages: int, epochs: int):
    # lp_ft without probe_epochs probes for half the budget: Kumar et al. train the probe to
    # convergence before fine-tuning, and one epoch of a head on a few images is far from that.
    probe_epochs = t.probe_epochs if t.probe_epochs is not None else max(1, epochs // 2)

    def plan(epoch: int) -> TransferPlan:
        return plan_transfer(strategy=t.strategy, num_stages=num_stages, freeze_layers=t.freeze_layers, bn=t.bn,
                             epoch=epoch, unfreeze_every=t.unfreeze_every,
                             unfreeze_milestones=t.unfreeze_milestones, probe_epochs=probe_epochs,
                             finetune_lr_mult=t.finetune_lr_mult)
    return plan


def _scale_lrs(opt: torch.optim.Optimizer, sched: Any, plan: TransferPlan) -> None:
    """Every group's base lr = its initial lr x `plan.lr_scale` (idempotent, so a resumed run
    gets the same rates), and the current lr follows at once, not one step later."""
    sched.base_lrs = [g["initial_lr"] * plan.lr_scale for g in opt.param_groups]
    for g, base, f in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        g["lr"] = base * f(sched.last_epoch)


def _wrap_ddp(model: nn.Module, rt: Runtime) -> nn.Module:
    if not rt.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    ddp = DDP(model, device_ids=ids, find_unused_parameters=True)
    ddp._vt_trainable = _trainable_ids(model)  # noqa: SLF001 - read by _rewrap_if_changed
    return ddp


def _trainable_ids(model: nn.Module) -> frozenset[int]:
    return frozenset(id(p) for p in model.parameters() if p.requires_grad)


def _rewrap_if_changed(train_model: nn.Module, model: nn.Module, rt: Runtime) -> nn.Module:
    """DDP registers its gradient all-reduce for the parameters that required grad when it was
    built: a stage unfrozen later would train on each rank's own gradients and the ranks would
    drift apart. A new wrapper when the trainable set changes (every rank changes at the same
    epoch: the plan is a function of the epoch)."""
    if not rt.distributed or getattr(train_model, "_vt_trainable", None) == _trainable_ids(model):
        return train_model
    return _wrap_ddp(model, rt)


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
