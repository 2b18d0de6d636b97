"""The Python API behind the CLI: `train`, `evaluate`, `predict`, `build_model`.

This is the one place (with the CLI) that reads a `Config`: it unpacks it into plain arguments
for the task plugin and the engine.

    import vision_transfer as vt
    run = vt.train("classification", overrides={"data.format": "folder", "data.root": "cells",
                                                "transfer.strategy": "linear_probe", "train.epochs": 20})
    run.metrics["accuracy"], run.out_dir
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import report
from .backbones import Backbone, create_backbone
from .config import Config, build_config, config_to_yaml, merge, parse_overrides, read_yaml, replace
from .defaults import resolve_defaults
from .engine.checkpoint import FORMAT, load_model, read_checkpoint
from .engine.adapters import footprint
from .engine.device import resolve_device, setup_runtime
from .engine.logging import console
from .engine.loop import FitSettings, fit, make_loader
from .files import write_json, write_text
from .engine.subsample import subsample_train
from .errors import VTError
from .imbalance import resolve_loss_options, resolve_sampler
from .task import get_task
from .tuning import ema_callback, resolve_batch_size, resolve_lr


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict
    best_epoch: int
    train_time_s: float
    model: nn.Module


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(task: str, *, backbone: str | Backbone = "tf_efficientnet_lite0", weights: str | None = None,
                head: str | nn.Module | Callable = "default", num_classes: int, out_indices=None,
                **options: Any) -> nn.Module:
    """A task model over a registry backbone (a name or an instance) with a head (a registered
    name, a module or a builder callable)."""
    t = get_task(task)
    bb = create_backbone(backbone, weights=weights, out_indices=out_indices)
    return t.build_model(backbone=bb, num_classes=num_classes, head=head, **options)   # the task resolves "default"


def resolve_config(task: str, config: Config | dict | str | os.PathLike | None,
                    overrides: dict | list[str] | None) -> Config:
    """Defaults <- `config` (a Config, a dict of sections or a YAML path) <- dotted `overrides`."""
    if isinstance(config, Config):
        base = config.model_dump(mode="json")
        base.pop("task", None)
    elif isinstance(config, dict):
        base = config
    elif config is not None:
        base = read_yaml(config)
    else:
        base = {}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else _dotted_tree(overrides or {})
    return build_config(task, merge(base, extra))


def _dotted_tree(d: dict) -> dict:
    from .config import set_dotted

    tree: dict = {}
    for k, v in d.items():
        set_dotted(tree, k, v)
    return tree


def train(task: str, *, config: Config | dict | str | None = None, overrides: dict | list[str] | None = None,
          backbone: Backbone | None = None, head: nn.Module | Callable | None = None,
          callbacks=()) -> RunResult:
    """Train a task model. `config`: a Config, a dict of sections or a YAML path; `overrides`:
    dotted keys (`{"train.epochs": 5}` or `["train.epochs=5"]`); `backbone` / `head`: instances
    or callables that replace the config's names."""
    return train_from_config(resolve_config(task, config, overrides), backbone=backbone, head=head,
                             callbacks=callbacks)


def default_out_dir(task: str) -> Path:
    return Path("runs") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_from_config(cfg: Config, *, backbone: Backbone | None = None, head: Any = None,
                      callbacks=()) -> RunResult:
    """Train from a validated config: defaults resolved (and written to `config.yaml`), data read,
    model built, `fit` run, `summary.json` and the task's plots written. `multitask`: several
    heads on one backbone (vision_transfer/multitask/run.py), through the same `fit`."""
    if cfg.task == "multitask":
        from .multitask.run import train_multitask

        return train_multitask(cfg, callbacks=callbacks)
    task = get_task(cfg.task).configured(cfg)
    cfg = resolve_defaults(cfg, task)
    rt = setup_runtime(cfg.train.device)
    report.reset()   # skips are counted per run
    seed_everything(cfg.train.seed)
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir(cfg.task)
    resume = _resume_path(cfg.train.resume, out_dir)
    if rt.is_main:
        _start_run_folder(out_dir, cfg, resume=resume)
    bb = create_backbone(backbone or cfg.model.backbone, weights=cfg.model.weights, out_indices=cfg.model.out_indices)
    _warn_licence(bb, rt.is_main)
    splits = task.build_datasets(data=cfg.data, image_size=cfg.train.image_size, preprocessing=bb.preprocessing,
                                 seed=cfg.train.seed, augment=cfg.train.augment)
    if cfg.data.max_per_class:   # every task: at most k images per class (a no-op where the task did it)
        splits.train = subsample_train(splits.train, per_class=cfg.data.max_per_class, seed=cfg.train.seed)
    head_arg = head if head is not None else cfg.model.head
    options = _model_options(task, cfg)
    tuned = resolve_loss_options(cfg, task, splits, options)   # train.class_weights=auto -> numbers
    model, meta = _build_run_model(task, cfg, bb, splits.classes, head_arg, options)
    batch_size = resolve_batch_size(cfg, task, model, splits.train, rt=rt, tuned=tuned)   # train.batch_size=auto
    from .adapt import prepare_adaptation   # adapt.*: None unless set

    adaptation = prepare_adaptation(cfg, task=task, splits=splits, image_size=cfg.train.image_size,
                                    preprocessing=bb.preprocessing, runtime=rt)
    plan = task.prepare_training(model, splits, strategy=cfg.transfer.strategy,
                                 cache_features=cfg.transfer.cache_features, device=rt.device,
                                 batch_size=batch_size, num_workers=cfg.data.num_workers,
                                 **_probe_options(cfg))
    meta["model_spec"]["options"].update(plan.model_options)
    tuned.update(resolve_sampler(cfg, plan, splits))   # data.sampler=balanced
    if plan.solve:   # a solved probe has no learning rate to find
        lr = task.default_lr_for(cfg.transfer.strategy) if cfg.train.lr == "auto" else cfg.train.lr
    else:
        lr = resolve_lr(cfg, task, plan, opt={"lr": cfg.train.lr, "backbone_lr_mult": cfg.transfer.backbone_lr_mult},
                        rt=rt, batch_size=batch_size, out_dir=out_dir if rt.is_main else None, tuned=tuned)
    cfg = replace(cfg, train={"lr": lr, "batch_size": batch_size})   # "auto" -> the numbers found
    ema = ema_callback(cfg, task, plan, splits, rt=rt, batch_size=batch_size, out_dir=out_dir, meta=meta)
    fit_task, plan = adaptation.wrap(plan) if adaptation else (task, plan)
    solved = plan.solve(out_dir=out_dir, checkpoint_meta=meta, is_main=rt.is_main,
                        tensorboard=cfg.run.tensorboard) if plan.solve else None
    result = solved or fit(plan.model, fit_task, train_data=plan.train, val_data=plan.val, classes=splits.classes,
                           settings=FitSettings.from_config(cfg), runtime=rt, out_dir=out_dir, resume=resume,
                           checkpoint_meta=meta, export_model=plan.export,
                           callbacks=[*callbacks, *([ema] if ema else [])])
    monitor = task.monitor if plan.val is not None else "train_loss"
    if ema is not None:
        tuned["ema"] = ema.summary(result.best_metrics, monitor)
    if rt.is_main:
        _write_summary(out_dir, cfg, task, result, bb, splits, plan=plan, adaptation=adaptation, monitor=monitor,
                       extra={"batch_size": batch_size, **tuned})
    return RunResult(out_dir=out_dir, metrics=result.best_metrics, best_epoch=result.best_epoch,
                     train_time_s=result.train_time_s, model=plan.export or plan.model)


def _start_run_folder(out_dir: Path, cfg: Config, *, resume: Path | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (out_dir / "metrics.jsonl").exists():
        (out_dir / "metrics.jsonl").unlink()
    write_text(out_dir / "config.yaml", config_to_yaml(cfg))   # the resolved values this run uses


def _model_options(task: Any, cfg: Config) -> dict:
    """The model and loss keys the task's `build_model` takes, from the config."""
    options = {k: getattr(cfg.model, k) for k in task.model_options}
    options.update({k: getattr(cfg.train, k) for k in task.loss_options})
    options.update({k: getattr(cfg.data, k) for k in task.data_options})
    return options


def _build_run_model(task: Any, cfg: Config, bb: Backbone, classes: list[str], head: Any,
                     options: dict) -> tuple[nn.Module, dict]:
    """The task model and the checkpoint metadata that rebuilds it without the config."""
    model = task.build_model(backbone=bb, num_classes=len(classes), head=head, **options)
    meta = {"format": FORMAT, "task": cfg.task, "classes": classes, "image_size": cfg.train.image_size,
            "preprocessing": bb.preprocessing.to_dict(), "config": cfg.model_dump(mode="json"),
            "model_spec": {"backbone": bb.name, "weights": bb.weights, "out_indices": list(bb.out_indices),
                           "head": task.head_spec(head), "num_classes": len(classes), "options": options}}
    return model, meta


def _write_summary(out_dir: Path, cfg: Config, task: Any, result: Any, bb: Backbone, splits: Any, *,
                   plan: Any, monitor: str, adaptation: Any = None, extra: dict | None = None) -> None:
    summary = {"task": cfg.task, "best_epoch": result.best_epoch, "metrics": result.best_metrics,
               "monitor": monitor, "train_time_s": round(result.train_time_s, 3), "epochs_run": len(result.history),
               "stopped_early": result.stopped_early, "backbone": bb.name, "weights": bb.weights,
               "strategy": cfg.transfer.strategy, "lr": cfg.train.lr, "schedule": cfg.train.schedule,
               "backbone_lr_mult": cfg.transfer.backbone_lr_mult, "num_train": len(splits.train),
               "num_val": len(splits.val) if splits.val is not None else 0, "classes": splits.classes,
               "data_info": splits.info, **footprint(plan.model.head if plan.solve else plan.model,  # solved: the head
                                                     plan.export or plan.model, out_dir), **(extra or {})}
    if adaptation:   # target_metrics, domain accuracy, A-distance, the feature plot
        summary = adaptation.finish(summary, out_dir=out_dir, model=plan.export or plan.model)
    write_json(out_dir / "summary.json", summary)
    task.write_artifacts(out_dir, metrics=result.best_metrics, classes=splits.classes)
    report.finish(out_dir, total=summary["num_train"] + summary["num_val"] + len(report.skipped()), info=splits.info)
    console.print(f"[bold]done[/bold]: best {monitor} {_fmt(result.best_metrics.get(monitor))} at epoch "
                  f"{result.best_epoch}; run folder {out_dir}")
def _warn_licence(bb: Backbone, main: bool) -> None:
    from .backbones.foundation import licence_warning

    warning = licence_warning(bb.name, bb.weights)
    if warning and main:
        console.print(f"[yellow]{warning}[/yellow]")
def _probe_options(cfg: Config) -> dict:
    """The linear-probe keys of `transfer` as plain arguments of `Task.prepare_training`. A solved
    probe fits the cached tensor in one go, so keys that act on epochs (a balanced sampler, an EMA,
    domain adaptation) send `probe_solver=auto` to the epoch path and refuse `lbfgs` (they would be
    ignored, silently, otherwise)."""
    t = cfg.transfer
    epochwise = [k for k, on in (("data.sampler=balanced", cfg.data.sampler == "balanced"),
                                 ("train.ema", cfg.train.ema is not None),
                                 ("adapt.method", cfg.adapt.method != "none")) if on]
    solver = t.probe_solver
    if epochwise and solver == "lbfgs":
        raise VTError(f"transfer.probe_solver=lbfgs solves the probe in one go and cannot apply "
                      f"{', '.join(epochwise)}: use transfer.probe_solver=sgd (or auto), or drop them")
    if epochwise and solver == "auto":
        solver = "sgd"
    return {"probe_solver": solver, "probe_layers": t.probe_layers, "probe_C": t.probe_C,
            "probe_select": t.probe_select}


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _resume_path(resume: str | None, out_dir: Path) -> Path | None:
    if not resume:
        return None
    if resume == "auto":
        p = out_dir / "checkpoints" / "last.pt"
        return p if p.is_file() else None
    p = Path(resume)
    if not p.is_file():
        raise VTError(f"train.resume={resume}: no such checkpoint (use a path to last.pt, or 'auto')")
    return p


def evaluate_checkpoint(task_name: str, *, checkpoint: str | os.PathLike, config: str | None = None,
                        overrides: list[str] | dict | None = None, out: str | os.PathLike | None = None,
                        device: str | None = None, head: str | None = None) -> dict:
    """Evaluate a checkpoint on a validation split; data settings default to those it was trained
    with. Writes `OUT/metrics.json`, the task's plots and a report; returns the metrics.
    `multitask`: the head `head` (or key multitask.head) through its own task's path (default OUT:
    RUN/eval-NAME)."""
    from .multitask.checkpoint import head_of, no_head

    head, overrides = head_of(head, overrides)
    if task_name == "multitask":
        from .multitask.checkpoint import default_eval_dir, single_head_file

        with single_head_file(checkpoint, head) as (sub, path, name):
            return evaluate_checkpoint(sub, checkpoint=path, config=config, overrides=overrides, device=device,
                                       out=out or default_eval_dir(checkpoint, name))
    no_head(task_name, head)
    task = get_task(task_name)
    ckpt_cfg = read_checkpoint(checkpoint, task=task_name).get("config", {})
    base = {"data": ckpt_cfg.get("data", {}), "train": {"seed": ckpt_cfg.get("train", {}).get("seed", 0)}}
    user = resolve_config(task_name, config, overrides).model_dump(mode="json", exclude_unset=True)
    user.pop("task", None)
    cfg = build_config(task_name, merge(base, user))
    task = task.configured(cfg)
    model, meta = load_model(checkpoint, task=task_name)
    dev = resolve_device(device or cfg.train.device)
    splits = task.build_datasets(data=cfg.data, image_size=meta["image_size"],
                                 preprocessing=_preprocessing(meta), seed=cfg.train.seed, augment=False)
    if splits.val is None:
        raise VTError("no validation data: give data.val.* or a data.root with val/ (or data.val_split > 0)")
    if list(splits.classes) != list(meta["classes"]):
        raise VTError(f"the data's classes {splits.classes} differ from the checkpoint's {meta['classes']}")
    from .engine.device import Runtime
    from .engine.loop import evaluate, public_metrics

    rt = Runtime(dev)
    loader = make_loader(splits.val, task, batch_size=cfg.train.batch_size, train=False, seed=cfg.train.seed,
                         rt=rt, num_workers=cfg.data.num_workers)
    model.to(dev)
    from .engine.device import amp_dtype

    full = evaluate(model, task, loader, device=dev, classes=meta["classes"], dtype=amp_dtype(dev, _trained_amp(meta)))
    metrics = public_metrics(full)
    out_dir = Path(out) if out else Path(checkpoint).resolve().parent.parent / "eval"
    write_json(out_dir / "metrics.json", metrics)
    task.write_artifacts(out_dir, metrics=full, classes=meta["classes"])
    _report(out_dir, task_name, full, meta["classes"])
    return metrics


def _preprocessing(meta: dict):
    from .backbones.base import Preprocessing

    return Preprocessing.from_dict(meta["preprocessing"])


def _report(out_dir: Path, task: str, metrics: dict, classes: list[str]) -> None:
    from .evaluation.report import write_report
    from .evaluation.report import print_metrics_table

    public = {k: v for k, v in metrics.items() if not k.startswith("_")}
    write_report(out_dir, task=task, metrics=public, classes=classes, confusion_matrix=public.get("confusion_matrix"),
                 pr_curves=metrics.get("_pr_curves"), title=f"{task} evaluation", write_metrics=False)
    print_metrics_table(public, title=f"{task} evaluation", classes=classes)


def evaluate(task: str, *, checkpoint: str | os.PathLike, overrides: dict | list[str] | None = None,
             out: str | os.PathLike | None = None, head: str | None = None) -> dict:
    """Python API mirror of `vt eval TASK --checkpoint CKPT [key=value ...] --out DIR [--task NAME]`."""
    return evaluate_checkpoint(task, checkpoint=checkpoint, overrides=overrides, out=out, head=head)


def predict(task: str, *, checkpoint: str | os.PathLike, inputs: list[str], out: str | os.PathLike,
            device: str = "auto", batch_size: int = 8, **options: Any) -> list[dict]:
    """Run a checkpoint on image files or folders; writes `OUT/predictions.json` and the task's
    drawings (unreadable images are skipped and counted). `options` go to the task
    (`score_threshold` for detection, `topk` for classification)."""
    from .data.image import IMAGE_SUFFIXES, list_images
    from .engine.device import amp_dtype
    from .engine.predict import predict_images

    from .multitask.checkpoint import no_head, single_head_file

    if task == "multitask":   # one head (options["head"]) through its own task's path
        with single_head_file(checkpoint, options.pop("head", None)) as (sub, path, _name):
            return predict(sub, checkpoint=path, inputs=inputs, out=out, device=device, batch_size=batch_size,
                           **options)
    no_head(task, options.pop("head", None))
    t = get_task(task)
    if Path(checkpoint).suffix.lower() == ".onnx":   # an exported model: ONNX Runtime behind the same call
        from .export.runtime import load_onnx

        model, meta = load_onnx(checkpoint, task=task)
    else:
        model, meta = load_model(checkpoint, task=task)
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += list_images(p)
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            paths.append(p)
        elif p.is_file():
            raise VTError(f"{item} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        else:
            raise VTError(f"{item} does not exist")
    if not paths:
        raise VTError(f"no images found in {', '.join(inputs)}")
    dev = resolve_device(device)
    model.to(dev)
    return predict_images(t, model, paths, out_dir=Path(out), meta=meta, device=dev, batch_size=batch_size,
                          dtype=amp_dtype(dev, _trained_amp(meta)), **options)


def _trained_amp(meta: dict) -> str:
    """The `train.amp` a checkpoint was trained (and validated) with: eval and predict use it too."""
    return ((meta.get("config") or {}).get("train") or {}).get("amp", "auto")
