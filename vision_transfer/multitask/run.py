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
    from ..config import replace
    from ..engine.device import setup_runtime
    from ..engine.loop import FitSettings, fit

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
    # the optimizer settings every head shares: train.lr defaults to the most careful of the heads' defaults
    cfg = replace(cfg, train={"lr": cfg.train.lr or min(e.cfg.train.lr for e in entries),
                              "schedule": cfg.train.schedule or "cosine"},
                  transfer={"backbone_lr_mult": _or(cfg.transfer.backbone_lr_mult, 1.0)})
    if rt.is_main:
        _start_run_folder(out_dir, cfg, resume=resume)   # config.yaml: the values this run uses
    parts = {e.name: e.train for e in entries}
    train = RoundRobinData(parts) if mt.sampling == "round_robin" else ProportionalData(parts)
    vals = {e.name: e.val for e in entries if e.val is not None}
    task = MultiTask(entries, monitor=mt.monitor if vals else "train_loss", num_workers=cfg.data.num_workers,
                     seed=cfg.train.seed)
    result = fit(model, task, train_data=train, val_data=ValSplits(vals) if vals else None, classes=[],
                 settings=FitSettings.from_config(cfg), runtime=rt, out_dir=out_dir, resume=resume,
                 checkpoint_meta=_checkpoint_meta(cfg, bb, entries, model), callbacks=list(callbacks))
    if rt.is_main:
        _finish(out_dir, cfg, result, task=task, model=model, entries=entries, backbone=bb)
    return RunResult(out_dir=out_dir, metrics=result.best_metrics, best_epoch=result.best_epoch,
                     train_time_s=result.train_time_s, model=model)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _checkpoint_meta(cfg: Config, bb: Any, entries: list[Entry], model: MultiTaskModel) -> dict:
    """What rebuilds the model without the config: the backbone, and per entry its single-task
    checkpoint metadata (so one head cuts out as an ordinary checkpoint of its task)."""
    from ..engine.checkpoint import FORMAT

    return {"format": FORMAT, "task": "multitask", "classes": [],
            "image_size": max(e.cfg.train.image_size for e in entries),
            "preprocessing": bb.preprocessing.to_dict(), "config": cfg.model_dump(mode="json"),
            "model_spec": {"backbone": bb.name, "weights": bb.weights, "out_indices": list(bb.out_indices),
                           "balance": cfg.multitask.balance, "aliases": model.aliases()},
            "entries": [{"name": e.name, "weight": e.weight, **e.meta} for e in entries]}


def _finish(out_dir: Path, cfg: Config, result: Any, *, task: MultiTask, model: MultiTaskModel,
            entries: list[Entry], backbone: Any) -> None:
    """RUN/backbone.safetensors (the last epoch's shared encoder) and summary.json."""
    from ..engine.logging import console
    from ..files import write_json
    from ..pretrain.export import save_backbone

    path = out_dir / "backbone.safetensors"
    save_backbone(backbone, path, image_size=max(e.cfg.train.image_size for e in entries), method="multitask",
                  start_weights=cfg.model.weights, epochs=len(result.history),
                  tasks=",".join(f"{e.name}:{e.task.name}" for e in entries))
    log_vars = model.log_vars.detach().cpu().tolist() if model.log_vars is not None else None
    mt = cfg.multitask
    summary = {"task": "multitask", "best_epoch": result.best_epoch, "metrics": result.best_metrics,
               "monitor": task.monitor, "train_time_s": round(result.train_time_s, 3),
               "epochs_run": len(result.history), "stopped_early": result.stopped_early, "backbone": backbone.name,
               "weights": backbone.weights, "lr": cfg.train.lr, "sampling": mt.sampling, "balance": mt.balance,
               "log_vars": dict(zip(task.entries, log_vars)) if log_vars else None, "backbone_file": str(path),
               "heads": {e.name: {"task": e.task.name, "weight": e.weight, "classes": e.classes,
                                  "image_size": e.cfg.train.image_size, "num_train": len(e.train),
                                  "num_val": len(e.val) if e.val is not None else 0} for e in entries}}
    write_json(out_dir / "summary.json", summary)
    best = result.best_metrics.get(task.monitor)
    best = round(best, 4) if isinstance(best, float) else best
    console.print(f"[bold]done[/bold]: best {task.monitor} {best} at epoch {result.best_epoch}; run folder {out_dir}; "
                  f"backbone {path}")
