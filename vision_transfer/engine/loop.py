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
from torch.utils.data import DataLoader, Dataset

from ..config import Config, TrainConfig, TransferConfig
from ..errors import VTError
from ..task import Task, find_backbone
from .checkpoint import read_checkpoint, rng_state, save_atomic, set_rng_state
from .device import Runtime, amp_dtype, barrier, broadcast_object, default_num_workers, use_channels_last
from .logging import RunLogger
from .optim import build_optimizer, lr_schedule
from .signals import ResumableSampler, StopRequested, check_stop, save_interrupted
from .transfer import TransferPlan, apply_plan, param_groups, plan_transfer, train_mode


@dataclass(frozen=True)
class FitSettings:
    """Everything `fit` needs besides the model and the data: the run's `train.*` and `transfer.*`
    sections with their task defaults resolved (`vision_transfer.defaults.resolve_defaults`: no
    None left in `train.lr` / `train.schedule`), the loader workers and the logging switches.

        FitSettings.from_config(resolve_defaults(cfg, task))
        FitSettings(train=TrainConfig(epochs=3, lr=1e-3, schedule="cosine"))   # in a script"""

    train: TrainConfig
    transfer: TransferConfig = field(default_factory=TransferConfig)
    num_workers: int | None = None
    tensorboard: bool = True
    show_progress: bool = True

    @classmethod
    def from_config(cls, cfg: Config) -> FitSettings:
        return cls(train=cfg.train, transfer=cfg.transfer, num_workers=cfg.data.num_workers,
                   tensorboard=cfg.run.tensorboard)


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
        sampler = ResumableSampler(dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=seed)
    # a last training batch of one sample would stop BatchNorm ("expected more than 1 value per
    # channel") at small image sizes: drop it then (one sample an epoch, reshuffled every epoch)
    drop_last = sampler is not None and len(sampler) % batch_size == 1 and len(sampler) > 1
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      collate_fn=task.collate, pin_memory=rt.device.type == "cuda",
                      drop_last=drop_last, persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def train_one_epoch(model: nn.Module, task: Task, loader: DataLoader, *, optimizer: torch.optim.Optimizer,
                    scheduler: Any, rt: Runtime, dtype: torch.dtype | None, channels_last: bool,
                    scaler: torch.amp.GradScaler | None, grad_accum: int = 1, grad_clip: float | None = None,
                    epoch: int = 0, progress: Any = None, sync_every: int = 10, start_step: int = 0,
                    on_step: Callable[[], None] | None = None) -> dict[str, float]:
    """One pass over `loader`; stops with a clear error on a non-finite loss. `on_step()` runs
    after every optimizer step (e.g. an EMA of the weights, engine/ema.py).

    The running loss stays on the device and is read (a host sync) only every `sync_every` steps
    and at the end, so a GPU is never stalled once per step just to print a number."""
    train_mode(model)
    running = torch.zeros((), dtype=torch.float64, device=rt.device)
    total, seen, checked, t0 = 0.0, 0, 0, time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    resumable = isinstance(loader.sampler, ResumableSampler)
    if start_step:   # resumed mid-epoch: skip the batches already trained on (signals.py)
        if not resumable:
            raise VTError("resuming mid-epoch needs the loader of make_loader (a ResumableSampler)")
        loader.sampler.skip = start_step * loader.batch_size
    n = start_step + len(loader)
    for step, batch in enumerate(loader, start=start_step):
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
            check_stop(epoch=epoch, step=step + 1)   # SIGTERM / Ctrl-C: stop at this step boundary
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
    if resumable:
        loader.sampler.skip = 0
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
    # the one autocast of evaluation: validation inside fit and `vt eval` score at the same precision
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
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


@dataclass
class _Training:
    """What one `fit` call builds once and every epoch uses."""

    model: nn.Module            # what trains (maybe DDP-wrapped as `train_model`)
    export: nn.Module           # what checkpoints store
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    dtype: torch.dtype | None
    channels_last: bool
    num_stages: int
    train_loader: DataLoader
    val_loader: DataLoader | None


@dataclass
class _Progress:
    """Where the run stands: restored from a checkpoint on resume, saved in every checkpoint."""

    monitor: str
    start: int = 0
    best: float | None = None
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    start_step: int = 0        # > 0: resumed from a step-boundary checkpoint inside epoch `start`

    def record(self, row: dict, metrics: dict) -> bool:
        self.history.append(row)
        improved = _better(row[self.monitor], self.best, self.monitor)
        if improved:
            self.best, self.best_epoch, self.best_metrics, self.bad_epochs = row[self.monitor], row["epoch"], \
                metrics or {k: v for k, v in row.items() if k != "epoch"}, 0
        else:
            self.bad_epochs += 1
        return improved

    def state(self) -> dict:
        return {"value": self.best, "epoch": self.best_epoch, "metrics": self.best_metrics,
                "bad_epochs": self.bad_epochs, "monitor": self.monitor}


def fit(model: nn.Module, task: Task, *, train_data: Dataset, val_data: Dataset | None, classes: list[str],
        settings: FitSettings, runtime: Runtime, out_dir: str | Path | None = None, resume: str | Path | None = None,
        checkpoint_meta: dict | None = None, export_model: nn.Module | None = None,
        callbacks: Sequence[Callable[[int, dict], None]] = ()) -> FitResult:
    """Train `model` for `settings.train.epochs`; returns the best epoch and its metrics.

    `export_model` is what checkpoints store when it differs from what trains (a linear probe on
    cached features trains only the head; the checkpoint holds backbone + head).
    `callbacks` are called as `cb(epoch, row)` after each epoch (epoch is 1-based); a callback
    with an `on_step()` method has it called after every optimizer step too."""
    s, rt = settings, runtime
    tr = _setup(model, task, train_data, val_data, s, rt, export_model)
    prog = _Progress(monitor=task.monitor if val_data is not None else "train_loss")
    logger = RunLogger(out_dir, enabled=rt.is_main, tensorboard=s.tensorboard, show_progress=s.show_progress)
    if resume:
        _restore(tr, prog, resume, logger)
    t_start, stopped = time.perf_counter() - sum(h.get("epoch_time_s", 0) for h in prog.history), False
    for epoch in range(prog.start, s.train.epochs):
        try:
            row, metrics = _run_epoch(tr, task, epoch, s, rt, logger, classes,
                                      start_step=prog.start_step if epoch == prog.start else 0,
                                      on_step=_step_hook(callbacks))
        except StopRequested as stop:   # save the step boundary, then let the CLI exit 130 / 143
            if rt.is_main and out_dir is not None:
                path = Path(out_dir) / "checkpoints" / "last.pt"
                save_interrupted(path, meta=checkpoint_meta, model_state=_cpu_state(tr.export), epoch=epoch,
                                 step=stop.step, optimizer=tr.optimizer, scheduler=tr.scheduler, scaler=tr.scaler,
                                 best=prog.state())
                stop.saved = path
            raise
        improved = prog.record(row, metrics)
        if rt.is_main:
            logger.log_epoch(row, monitor=prog.monitor)
            if out_dir is not None:
                _save_checkpoints(tr, prog, Path(out_dir), epoch=epoch + 1, metrics=metrics, improved=improved,
                                  meta=checkpoint_meta)
        barrier(rt)
        for cb in callbacks:
            cb(epoch + 1, row)
        if s.train.early_stopping and prog.bad_epochs >= s.train.early_stopping:
            logger.note(f"early stopping: {prog.monitor} did not improve for {prog.bad_epochs} epochs "
                        f"(best {prog.best:.4f} at epoch {prog.best_epoch})")
            stopped = True
            break
    logger.close()
    return FitResult(best_epoch=prog.best_epoch, best_metrics=prog.best_metrics,
                     last_metrics=prog.history[-1] if prog.history else {}, history=prog.history,
                     train_time_s=time.perf_counter() - t_start, stopped_early=stopped)


def _setup(model: nn.Module, task: Task, train_data: Dataset, val_data: Dataset | None, s: FitSettings,
           rt: Runtime, export_model: nn.Module | None) -> _Training:
    """Device, precision, the transfer plan of epoch 0, optimizer groups, loaders and schedule."""
    t = s.train
    if t.lr is None or t.schedule is None:
        raise VTError("fit needs train.lr and train.schedule resolved: pass "
                      "FitSettings.from_config(vision_transfer.defaults.resolve_defaults(cfg, task))")
    export_model = export_model or model
    model.to(rt.device)
    export_model.to(rt.device)
    cl = use_channels_last(rt.device, t.channels_last)
    if cl:
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(rt.device, t.amp)
    num_stages = len(find_backbone(model).stages) if _has_backbone(model) else 0
    if num_stages:
        apply_plan(model, plan_transfer(s.transfer, num_stages=num_stages, epoch=0))
        groups = param_groups(model, lr=t.lr, weight_decay=t.weight_decay,
                              backbone_lr_mult=_or(s.transfer.backbone_lr_mult, 1.0),
                              layer_lr_decay=s.transfer.layer_lr_decay)
    else:
        groups = [{"params": list(model.parameters()), "lr": t.lr, "weight_decay": t.weight_decay, "name": "head"}]
    opt = build_optimizer(groups, name=t.optimizer, lr=t.lr)
    per_rank_batch = max(1, t.batch_size // rt.world_size)
    train_loader = make_loader(train_data, task, batch_size=per_rank_batch, train=True, seed=t.seed, rt=rt,
                               num_workers=s.num_workers)
    val_loader = make_loader(val_data, task, batch_size=per_rank_batch, train=False, seed=t.seed, rt=rt,
                             num_workers=s.num_workers) if val_data is not None and rt.is_main else None
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum)
    sched = lr_schedule(opt, kind=t.schedule, total_steps=t.epochs * steps_per_epoch,
                        warmup_steps=round(t.warmup_epochs * steps_per_epoch))
    return _Training(model=model, export=export_model, train_model=_wrap_ddp(model, rt), optimizer=opt,
                     scheduler=sched, scaler=torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
                     dtype=dtype, channels_last=cl, num_stages=num_stages, train_loader=train_loader,
                     val_loader=val_loader)


def _restore(tr: _Training, prog: _Progress, resume: str | Path, logger: RunLogger) -> None:
    """Weights, optimizer, schedule, scaler, RNG and the progress of a checkpoint (`last.pt`)."""
    state = read_checkpoint(resume)
    tr.export.load_state_dict(state["model"])
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    if tr.scaler and state.get("scaler"):
        tr.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    best = state["best"]
    prog.start, prog.best, prog.best_epoch = state["epoch"], best.get("value"), best.get("epoch", 0)
    prog.best_metrics, prog.bad_epochs = best.get("metrics", {}), best.get("bad_epochs", 0)
    prog.history = logger.read_history(prog.start)
    prog.start_step = state.get("step", 0)   # a step-boundary checkpoint (signals.py): the epoch is resumed
    logger.note(f"resumed from {resume} after epoch {prog.start}" + (f", step {prog.start_step}" if prog.start_step else ""))


def _run_epoch(tr: _Training, task: Task, epoch: int, s: FitSettings, rt: Runtime, logger: RunLogger,
               classes: list[str], *, start_step: int = 0,
               on_step: Callable[[], None] | None = None) -> tuple[dict, dict]:
    """The epoch's transfer plan, one pass over the train loader, validation; -> (row, metrics)."""
    if tr.num_stages:
        plan = plan_transfer(s.transfer, num_stages=tr.num_stages, epoch=epoch)
        apply_plan(tr.model, plan)
        _scale_lrs(tr.optimizer, tr.scheduler, plan)
        tr.train_model = _rewrap_if_changed(tr.train_model, tr.model, rt)
    tr.train_loader.sampler.set_epoch(epoch)
    if hasattr(tr.train_loader.dataset, "set_epoch"):
        tr.train_loader.dataset.set_epoch(epoch)
    with logger.epoch_progress(epoch, s.train.epochs) as progress:
        stats = train_one_epoch(tr.train_model, task, tr.train_loader, optimizer=tr.optimizer,
                                scheduler=tr.scheduler, rt=rt, dtype=tr.dtype, channels_last=tr.channels_last,
                                scaler=tr.scaler, grad_accum=s.train.grad_accum, grad_clip=s.train.grad_clip,
                                epoch=epoch, progress=progress, start_step=start_step, on_step=on_step)
    metrics: dict[str, Any] = {}
    if tr.val_loader is not None:
        metrics = public_metrics(evaluate(tr.model, task, tr.val_loader, device=rt.device, classes=classes,
                                          dtype=tr.dtype))
    metrics = broadcast_object(metrics, rt)
    return {"epoch": epoch + 1, **stats, "lr": tr.optimizer.param_groups[0]["lr"], **metrics}, metrics


def _save_checkpoints(tr: _Training, prog: _Progress, out_dir: Path, *, epoch: int, metrics: dict, improved: bool,
                      meta: dict | None) -> None:
    """`last.pt` every epoch (with optimizer, schedule and RNG: resumable), `best.pt` when improved."""
    ckpt = {**(meta or {}), "model": _cpu_state(tr.export), "epoch": epoch, "metrics": metrics,
            "optimizer": tr.optimizer.state_dict(), "scheduler": tr.scheduler.state_dict(),
            "scaler": tr.scaler.state_dict() if tr.scaler else None, "rng": rng_state(), "best": prog.state()}
    save_atomic(ckpt, out_dir / "checkpoints" / "last.pt")
    if improved:
        save_atomic({k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler")},
                    out_dir / "checkpoints" / "best.pt")


def _step_hook(callbacks: Sequence[Any]) -> Callable[[], None] | None:
    hooks = [cb.on_step for cb in callbacks if callable(getattr(cb, "on_step", None))]
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def run_all() -> None:
        for h in hooks:
            h()
    return run_all


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _has_backbone(model: nn.Module) -> bool:
    try:
        find_backbone(model)
        return True
    except TypeError:
        return False


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
