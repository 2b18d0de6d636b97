"""`vt train multitask -c recipe.yaml` (and `vt.train("multitask", ...)`): heads of several tasks on
one shared encoder, trained by the shared `fit`.

    model: {backbone: tf_efficientnet_lite0, weights: imagenet}
    multitask:
      sampling: round_robin          # or proportional
      balance: fixed                 # or uncertainty (Kendall et al. 2018)
      tasks:
        - {name: cells, task: classification, weight: 1.0,
           data: {format: csv, train: {annotations: labels.csv, images: imgs}}}
        - {name: masks, task: segmentation, model: {head: unet},
           data: {format: masks, train: {images: imgs, masks: masks}, classes: [bg, a, b]}}

Each entry is validated as that task's own config (its `data.*`, `model.*` head keys, and in
`train.*` its image size and loss keys); its head is built by its task plugin on the shared
backbone. The run folder gets what every run gets (config.yaml, metrics.jsonl with every head's
metrics prefixed by the entry name, checkpoints/last.pt and best.pt holding backbone + every head,
summary.json) and `backbone.safetensors` (the last epoch's shared encoder: `model.weights=FILE`
for any single task).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config, build_config
from ..errors import VTError, did_you_mean
from .task import MEAN_SCORE, Entry, MultiTask, MultiTaskModel, ProportionalData, RoundRobinData, ValSplits

SHARED_MODEL_KEYS = ("backbone", "weights", "out_indices")   # one backbone: set at the top, not per entry
SHARED_TRAIN_KEYS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "warmup_epochs", "weight_decay",
                     "device", "seed", "resume", "amp", "channels_last", "grad_accum", "early_stopping",
                     "grad_clip", "ema", "augment")


def _entry_error(name: str, task: str, message: str) -> VTError:
    return VTError(f"multitask entry {name!r} ({task}): {message}")


def entry_config(spec: Any, top: Config) -> Config:
    """The single-task config of one entry: its own data/model/loss keys over the shared ones."""
    from ..defaults import resolve_defaults
    from ..plugins import task_names
    from ..task import get_task

    names = [n for n in task_names() if n != "multitask"]
    if spec.task not in names:
        raise _entry_error(spec.name, spec.task, f"unknown task{did_you_mean(spec.task, names)}; valid: {', '.join(names)}")
    for k in spec.model:
        if k in SHARED_MODEL_KEYS:
            raise _entry_error(spec.name, spec.task, f"model.{k} is shared by every head: set it at the top (model.{k})")
    for k in spec.train:
        if k in SHARED_TRAIN_KEYS:
            raise _entry_error(spec.name, spec.task, f"train.{k} is shared by every head: set it at the top (train.{k})")
    tree = top.model_dump(mode="json", exclude={"task", "multitask", "data", "model", "train"}, exclude_unset=True)
    model = {k: getattr(top.model, k) for k in SHARED_MODEL_KEYS}
    train = top.train.model_dump(mode="json", exclude_unset=True)
    data = {"num_workers": top.data.num_workers, **spec.data}
    try:
        cfg = build_config(spec.task, {**tree, "data": data, "model": {**model, **spec.model},
                                       "train": {**train, **spec.train}})
        return resolve_defaults(cfg, get_task(spec.task))
    except VTError as e:
        raise _entry_error(spec.name, spec.task, str(e)) from None


def build_entries(cfg: Config, backbone: Any) -> tuple[list[Entry], MultiTaskModel]:
    """Every entry's config, datasets and head (on the one `backbone`), and the model holding them."""
    from ..api import _build_run_model, _model_options
    from ..engine.subsample import subsample_train
    from ..task import get_task

    mt = cfg.multitask
    if not mt.tasks:
        raise VTError("multitask.tasks is empty: give a list of entries "
                      "[{name: NAME, task: classification|detection|segmentation, data: {...}}]")
    seen: set[str] = set()
    entries = []
    for spec in mt.tasks:
        if spec.name in seen or not spec.name or "/" in spec.name or "." in spec.name:
            raise VTError(f"multitask entry name {spec.name!r}: names must be unique, non-empty, without '/' or '.'")
        seen.add(spec.name)
        ecfg = entry_config(spec, cfg)
        task = get_task(spec.task)
        try:
            splits = task.build_datasets(data=ecfg.data, image_size=ecfg.train.image_size,
                                         preprocessing=backbone.preprocessing, seed=cfg.train.seed,
                                         augment=ecfg.train.augment)
        except VTError as e:
            raise _entry_error(spec.name, spec.task, str(e)) from None
        if ecfg.data.max_per_class:
            splits.train = subsample_train(splits.train, per_class=ecfg.data.max_per_class, seed=cfg.train.seed)
        entries.append(Entry(name=spec.name, task=task, classes=list(splits.classes), weight=spec.weight,
                             cfg=ecfg, train=splits.train, val=splits.val))
    # heads attach to the one backbone; one may widen its out_indices (a classifier needs the deepest
    # map): build again then, so that every head sees the maps the checkpoint will record
    for _ in range(2):
        before = tuple(backbone.out_indices)
        heads = {}
        for e in entries:
            try:
                heads[e.name], e.meta = _build_run_model(e.task, e.cfg, backbone, e.classes, e.cfg.model.head,
                                                         _model_options(e.task, e.cfg))
            except VTError as err:
                raise _entry_error(e.name, e.task.name, str(err)) from None
        if tuple(backbone.out_indices) == before:
            break
    for e in entries:
        e.meta["model_spec"]["out_indices"] = list(backbone.out_indices)
    model = MultiTaskModel(backbone, heads, tasks={e.name: e.task for e in entries},
                           weights={e.name: e.weight for e in entries}, balance=mt.balance)
    return entries, model


def _check_monitor(monitor: str, entries: list[Entry]) -> None:
    if monitor == MEAN_SCORE:
        return
    name = monitor.partition("/")[0]
    if "/" not in monitor or name not in {e.name for e in entries}:
        valid = [MEAN_SCORE, *(f"{e.name}/{e.task.monitor}" for e in entries)]
        raise VTError(f"multitask.monitor={monitor}: use {MEAN_SCORE} or NAME/METRIC of an entry, e.g. "
                      f"{', '.join(valid)}")


def _refuse_unsupported(cfg: Config) -> None:
    t = cfg.train
    for key, bad in (("train.lr=auto", t.lr == "auto"), ("train.batch_size=auto", t.batch_size == "auto"),
                     ("train.ema", t.ema is not None), ("adapt.method", cfg.adapt.method != "none"),
                     ("data.sampler=balanced", cfg.data.sampler == "balanced")):
        if bad:
            raise VTError(f"vt train multitask does not take {key} (set numbers / per-task runs instead)")


def train_multitask(cfg: Config, *, callbacks=()) -> Any:
    """Train every entry's head on the shared backbone with the shared `fit`; -> `RunResult`."""
    from .. import report
    from ..api import RunResult, _resume_path, _start_run_folder, default_out_dir, seed_everything
    from ..backbones import create_backbone
    from ..engine.checkpoint import FORMAT
    from ..engine.device import setup_runtime
    from ..engine.logging import console
    from ..engine.loop import FitSettings, fit
    from ..files import write_json
    from ..pretrain.export import save_backbone

    _refuse_unsupported(cfg)
    if not cfg.multitask.tasks:
        raise VTError("multitask.tasks is empty: give a list of entries "
                      "[{name: NAME, task: classification|detection|segmentation, data: {...}}]")
    rt = setup_runtime(cfg.train.device)
    report.reset()
    seed_everything(cfg.train.seed)
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else default_out_dir("multitask")
    resume = _resume_path(cfg.train.resume, out_dir)
    bb = create_backbone(cfg.model.backbone, weights=cfg.model.weights, out_indices=cfg.model.out_indices)
    entries, model = build_entries(cfg, bb)
    mt = cfg.multitask
    _check_monitor(mt.monitor, entries)
    if rt.is_main:
        _start_run_folder(out_dir, cfg, resume=resume)
    parts = {e.name: e.train for e in entries}
    train = RoundRobinData(parts) if mt.sampling == "round_robin" else ProportionalData(parts)
    vals = {e.name: e.val for e in entries if e.val is not None}
    task = MultiTask(entries, monitor=mt.monitor if vals else "train_loss", num_workers=cfg.data.num_workers,
                     seed=cfg.train.seed)
    lr = cfg.train.lr or min(e.cfg.train.lr for e in entries)   # the most careful of the heads' defaults
    settings = FitSettings(train=cfg.train.model_copy(update={"lr": lr, "schedule": cfg.train.schedule or "cosine"}),
                           transfer=cfg.transfer.model_copy(update={"backbone_lr_mult": cfg.transfer.backbone_lr_mult or 1.0}),
                           num_workers=cfg.data.num_workers, tensorboard=cfg.run.tensorboard)
    image_size = max(e.cfg.train.image_size for e in entries)
    meta = {"format": FORMAT, "task": "multitask", "classes": [], "image_size": image_size,
            "preprocessing": bb.preprocessing.to_dict(), "config": cfg.model_dump(mode="json"),
            "model_spec": {"backbone": bb.name, "weights": bb.weights, "out_indices": list(bb.out_indices),
                           "balance": mt.balance},
            "entries": [{"name": e.name, "weight": e.weight, **e.meta} for e in entries]}
    result = fit(model, task, train_data=train, val_data=ValSplits(vals) if vals else None, classes=[],
                 settings=settings, runtime=rt, out_dir=out_dir, resume=resume, checkpoint_meta=meta,
                 callbacks=list(callbacks))
    backbone_path = out_dir / "backbone.safetensors"
    if rt.is_main:
        save_backbone(bb, backbone_path, image_size=image_size, method="multitask", start_weights=cfg.model.weights,
                      epochs=len(result.history), tasks=",".join(f"{e.name}:{e.task.name}" for e in entries))
        log_vars = model.log_vars.detach().cpu().tolist() if model.log_vars is not None else None
        summary = {"task": "multitask", "best_epoch": result.best_epoch, "metrics": result.best_metrics,
                   "monitor": task.monitor, "train_time_s": round(result.train_time_s, 3),
                   "epochs_run": len(result.history), "stopped_early": result.stopped_early, "backbone": bb.name,
                   "weights": bb.weights, "lr": lr, "sampling": mt.sampling, "balance": mt.balance,
                   "log_vars": dict(zip((e.name for e in entries), log_vars)) if log_vars else None,
                   "backbone_file": str(backbone_path),
                   "heads": {e.name: {"task": e.task.name, "weight": e.weight, "classes": e.classes,
                                      "image_size": e.cfg.train.image_size, "num_train": len(e.train),
                                      "num_val": len(e.val) if e.val is not None else 0} for e in entries}}
        write_json(out_dir / "summary.json", summary)
        best = result.best_metrics.get(task.monitor)
        console.print(f"[bold]done[/bold]: best {task.monitor} {best if not isinstance(best, float) else round(best, 4)} "
                      f"at epoch {result.best_epoch}; run folder {out_dir}; backbone {backbone_path}")
    return RunResult(out_dir=out_dir, metrics=result.best_metrics, best_epoch=result.best_epoch,
                     train_time_s=result.train_time_s, model=model)
