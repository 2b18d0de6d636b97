"""`vt lr-find`, `train.lr=auto` and `train.batch_size=auto`: the config side of the finders in
`engine/lr_find.py` and `engine/batch_size.py` (this module, like `api.py`, reads a Config).

    vt lr-find classification data.root=cells train.image_size=128 run.out_dir=runs/lr
    -> runs/lr/lr_find.png, lr_find.json; prints the suggestion to pass as train.lr=...
    vt train classification data.root=cells train.lr=auto train.batch_size=auto
    -> the sweep runs first; summary.json records "lr", "batch_size" and "auto": {"lr": ..., "batch_size": ...}
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from .config import Config
from .engine.device import Runtime
from .config import TransferConfig
from .errors import VTError
from .task import Task, TrainingPlan

DEFAULT_BATCH = 32   # what prepare_training sees for feature caching before a batch size is known


def transfer_settings(cfg: Config, *, backbone_lr_mult: float) -> TransferConfig:
    """`cfg.transfer` with the backbone lr multiplier given (the task's default resolved)."""
    return cfg.transfer.model_copy(update={"backbone_lr_mult": backbone_lr_mult})


def resolve_batch_size(cfg: Config, task: Task, model: nn.Module, train_data: Dataset, *, rt: Runtime,
                       tuned: dict) -> int:
    """`train.batch_size`, or for `auto` the largest that fits (recorded in `tuned["batch_size"]`)."""
    if cfg.train.batch_size != "auto":
        return int(cfg.train.batch_size)
    from .engine.batch_size import auto_batch_size
    from .engine.logging import console

    size, report = auto_batch_size(model, task, train_data, device=rt.device,
                                   transfer=transfer_settings(cfg, backbone_lr_mult=1.0))
    tuned.setdefault("auto", {})["batch_size"] = report
    console.print(f"[bold]train.batch_size=auto[/bold]: {size} ({report['rule']})")
    return size


def resolve_lr(cfg: Config, task: Task, plan: TrainingPlan, *, opt: dict, rt: Runtime, batch_size: int,
               out_dir: Path | None, tuned: dict) -> float:
    """`opt["lr"]`, or for `auto` the range test's suggestion (lr_find.png in `out_dir`)."""
    if opt["lr"] != "auto":
        return opt["lr"]
    from .engine.logging import console

    from .engine.device import broadcast_object

    result = run_lr_find(cfg, task, plan, rt=rt, batch_size=batch_size, backbone_lr_mult=opt["backbone_lr_mult"],
                         out_dir=out_dir)
    result = broadcast_object(result, rt)   # under torchrun every rank trains at rank 0's suggestion
    tuned.setdefault("auto", {})["lr"] = {"suggestion": result.suggestion, "rule": result.rule, "min_loss_lr": result.min_loss_lr,
                   "steepest_lr": result.steepest_lr, "plot": "lr_find.png" if out_dir else None}
    console.print(f"[bold]train.lr=auto[/bold]: {result.suggestion:.3g} ({result.rule}; loss lowest at "
                  f"{result.min_loss_lr:.3g})")
    return result.suggestion


def ema_callback(cfg: Config, task: Task, plan: TrainingPlan, splits: Any, *, rt: Runtime, batch_size: int,
                 out_dir: Path | None, meta: dict):
    """`train.ema=DECAY`: the fit callback that keeps, evaluates and checkpoints the EMA weights."""
    if not cfg.train.ema:
        return None
    from .engine.ema import EMACallback

    return EMACallback(plan.model, task, decay=cfg.train.ema, val_data=plan.val, classes=splits.classes, runtime=rt,
                       batch_size=batch_size, monitor=task.monitor if plan.val is not None else "train_loss",
                       export_model=plan.export, out_dir=out_dir if rt.is_main else None, checkpoint_meta=meta)


def run_lr_find(cfg: Config, task: Task, plan: TrainingPlan, *, rt: Runtime, batch_size: int,
                backbone_lr_mult: float, out_dir: Path | None):
    from .engine.lr_find import lr_range_test, write_lr_find

    s = cfg.lr_find
    result = lr_range_test(plan.model, task, plan.train, runtime=rt, batch_size=batch_size,
                           transfer=transfer_settings(cfg, backbone_lr_mult=backbone_lr_mult),
                           weight_decay=cfg.train.weight_decay, optimizer=cfg.train.optimizer, start_lr=s.start_lr,
                           end_lr=s.end_lr, num_steps=s.num_steps, seed=cfg.train.seed,
                           num_workers=cfg.data.num_workers)
    if out_dir is not None:
        write_lr_find(result, out_dir)
    return result


def lr_find(cfg: Config) -> tuple[Any, Path]:
    """The range test for a training config, without training: `(LRFindResult, out_dir)`; the
    same set-up as `api.train_from_config` up to the point where training would start."""
    from .api import _build_run_model, _model_options, seed_everything
    from .backbones import create_backbone
    from .defaults import resolve_defaults
    from .engine.device import setup_runtime
    from .imbalance import resolve_loss_options
    from .task import get_task

    task = get_task(cfg.task).configured(cfg)
    cfg = resolve_defaults(cfg, task)
    rt = setup_runtime(cfg.train.device)
    seed_everything(cfg.train.seed)
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else Path("runs") / f"lr-find-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    bb = create_backbone(cfg.model.backbone, weights=cfg.model.weights, out_indices=cfg.model.out_indices)
    splits = task.build_datasets(data=cfg.data, image_size=cfg.train.image_size, preprocessing=bb.preprocessing,
                                 seed=cfg.train.seed, augment=cfg.train.augment)
    options = _model_options(task, cfg)
    resolve_loss_options(cfg, task, splits, options)
    model, _ = _build_run_model(task, cfg, bb, splits.classes, cfg.model.head, options)
    batch_size = resolve_batch_size(cfg, task, model, splits.train, rt=rt, tuned={})
    plan = task.prepare_training(model, splits, strategy=cfg.transfer.strategy,
                                 cache_features=cfg.transfer.cache_features, device=rt.device,
                                 batch_size=batch_size, num_workers=cfg.data.num_workers,
                                 probe_solver="sgd")   # a range test needs the gradient-trained head
    return run_lr_find(cfg, task, plan, rt=rt, batch_size=batch_size, backbone_lr_mult=cfg.transfer.backbone_lr_mult,
                       out_dir=out_dir), out_dir


def lr_find_command(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.logging import console

    cfg = load_config(args.task, path=args.config, overrides=args.overrides)
    if cfg.lr_find.end_lr <= cfg.lr_find.start_lr:
        raise VTError(f"lr_find.end_lr ({cfg.lr_find.end_lr}) must be above lr_find.start_lr ({cfg.lr_find.start_lr})")
    result, out_dir = lr_find(cfg)
    steep = f"{result.steepest_lr:.3g}" if result.steepest_lr else "n/a"
    console.print(f"[bold]suggested train.lr={result.suggestion:.3g}[/bold] ({result.rule}; loss lowest at "
                  f"{result.min_loss_lr:.3g}, steepest descent at {steep}; "
                  f"{'stopped at divergence' if result.diverged else 'no divergence within the sweep'})")
    console.print(f"plot: {out_dir / 'lr_find.png'}, numbers: {out_dir / 'lr_find.json'}")
    return 0
