"""`vt pretrain IMAGE_DIR [key=value ...]` and its Python mirror `pretrain(...)`.

    RUN/config.yaml  metrics.jsonl (train_loss, rankme, uniformity[, knn_accuracy] per epoch)
    RUN/checkpoints/last.pt, best.pt    (resume with train.resume=auto)
    RUN/backbone.safetensors            the last epoch's backbone: model.weights=RUN/backbone.safetensors
    RUN/pretrain_curves.png             loss and monitoring curves
    RUN/summary.json

`model.weights` is where pretraining starts (imagenet: "continue from ImageNet", the default;
none: from random init; a file).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..config import PretrainRunConfig, config_to_yaml, merge, parse_overrides, read_yaml, valid_keys
from ..errors import VTError, did_you_mean


@dataclass
class PretrainResult:
    out_dir: Path
    backbone_path: Path
    metrics: dict
    train_time_s: float


def load_pretrain_config(*, path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None,
                         image_dir: str | None = None) -> PretrainRunConfig:
    """Defaults <- YAML <- overrides (dotted strings or a dict of dotted keys), validated."""
    tree = read_yaml(path) if path else {}
    if isinstance(overrides, dict):
        overrides = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in overrides.items()]
    tree = merge(tree, parse_overrides(overrides))
    if image_dir:
        tree = merge(tree, {"data": {"train": {"images": image_dir}}})
    try:
        cfg = PretrainRunConfig(**tree)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise VTError(f"unknown config key {key!r}{did_you_mean(key, valid_keys(PretrainRunConfig))}") from None
        raise VTError(f"config key {key!r}: {err['msg']} (got {err.get('input')!r})") from None
    from .methods import METHODS

    if cfg.pretrain.method not in METHODS:
        raise VTError(f"unknown pretrain.method {cfg.pretrain.method!r}{did_you_mean(cfg.pretrain.method, METHODS)}"
                      f"; valid: {', '.join(METHODS)}")
    return cfg


def pretrain(image_dir: str | os.PathLike | None = None, *, config: str | os.PathLike | None = None,
             overrides: list[str] | dict | None = None, callbacks=()) -> PretrainResult:
    """Self-supervised pretraining of `model.backbone` on the images below `image_dir`."""
    cfg = load_pretrain_config(path=config, overrides=overrides, image_dir=str(image_dir) if image_dir else None)
    return pretrain_from_config(cfg, callbacks=callbacks)


def pretrain_from_config(cfg: PretrainRunConfig, *, callbacks=()) -> PretrainResult:
    from ..api import _resume_path, seed_everything
    from ..backbones import create_backbone
    from ..engine.device import setup_runtime
    from ..engine.loop import FitSettings, fit
    from ..files import write_json
    from .export import save_backbone
    from .methods import build_method, views_needed
    from .task import VIEW_KEYS, Pretraining
    from .views import find_unlabelled_images, image_root

    p, t = cfg.pretrain, cfg.train
    paths = find_unlabelled_images(image_root(cfg.data, None))   # before any model is built: fail fast
    rt = setup_runtime(t.device)
    seed_everything(t.seed)
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else Path("runs") / f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}"
    resume = _resume_path(t.resume, out_dir)
    if rt.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (out_dir / "metrics.jsonl").exists():
            (out_dir / "metrics.jsonl").unlink()
        (out_dir / "config.yaml").write_text(config_to_yaml(cfg))
    bb = create_backbone(cfg.model.backbone, weights=cfg.model.weights, out_indices=(-1,))
    method = build_method(p.method, backbone=bb, hidden_dim=p.hidden_dim, proj_dim=p.proj_dim,
                          temperature=p.temperature, ema=p.ema)
    view = {k: getattr(p, k) for k in VIEW_KEYS}
    if p.method == "rotation":   # flips/turns that compose into a rotation would make the labels ambiguous
        view.update(vflip=False, rotate90=False)
    task = Pretraining(knn=bool(p.knn_val), knn_k=p.knn_k)
    image_size = t.image_size or task.default_image_size
    splits = task.build_datasets(data={"paths": paths, "views": views_needed(method), "view": view,
                                       "knn_val": p.knn_val, "monitor_images": p.monitor_images},
                                 image_size=image_size, preprocessing=bb.preprocessing, seed=t.seed)
    meta = {"format": "vision_transfer/1", "task": "pretrain", "method": p.method, "image_size": image_size,
            "preprocessing": bb.preprocessing.to_dict(), "config": cfg.model_dump(mode="json"),
            "model_spec": {"backbone": bb.name, "weights": bb.weights}}
    plotter = CurvePlotter(out_dir, enabled=rt.is_main)
    settings = FitSettings(train=t.model_copy(update={"lr": t.lr or task.default_lr,
                                                      "schedule": t.schedule or task.default_schedule}),
                           num_workers=cfg.data.num_workers, tensorboard=cfg.run.tensorboard)
    result = fit(method, task, train_data=splits.train, val_data=splits.val, classes=splits.classes,
                 settings=settings, runtime=rt, out_dir=out_dir, resume=resume, checkpoint_meta=meta,
                 callbacks=[plotter, *callbacks])
    backbone_path = out_dir / "backbone.safetensors"
    if rt.is_main:
        save_backbone(method.backbone, backbone_path, image_size=image_size, method=p.method,
                      start_weights=cfg.model.weights, epochs=t.epochs, images=len(paths))
        summary = {"task": "pretrain", "method": p.method, "backbone": bb.name, "start_weights": cfg.model.weights,
                   "num_images": len(paths), "image_size": image_size, "epochs_run": len(result.history),
                   "train_time_s": round(result.train_time_s, 3), "last_metrics": result.last_metrics,
                   "best_epoch": result.best_epoch, "monitor": task.monitor, "backbone_file": str(backbone_path)}
        write_json(out_dir / "summary.json", summary)
        from ..engine.logging import console

        console.print(f"[bold]done[/bold]: {len(paths)} images, {len(result.history)} epochs in "
                      f"{result.train_time_s:.0f}s; backbone {backbone_path} "
                      f"(use model.weights={backbone_path} model.backbone={bb.name})")
    return PretrainResult(out_dir=out_dir, backbone_path=backbone_path, metrics=result.last_metrics,
                          train_time_s=result.train_time_s)


class CurvePlotter:
    """Epoch callback: redraws RUN/pretrain_curves.png (loss, rank, uniformity, kNN) from the rows so far."""

    def __init__(self, out_dir: Path, *, enabled: bool = True) -> None:
        self.out_dir, self.enabled = out_dir, enabled

    def __call__(self, epoch: int, row: dict) -> None:
        if self.enabled:
            from .plots import plot_curves

            plot_curves(self.out_dir / "metrics.jsonl", self.out_dir / "pretrain_curves.png")


def pretrain_command(args: argparse.Namespace) -> int:
    """`vt pretrain IMAGE_DIR [-c CONFIG] [key=value ...]`."""
    image_dir, overrides = args.image_dir, list(args.overrides or [])
    if image_dir and "=" in image_dir and not Path(image_dir).exists():   # only key=value given
        image_dir, overrides = None, [image_dir, *overrides]
    pretrain(image_dir, config=args.config, overrides=overrides)
    return 0
