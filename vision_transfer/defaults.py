"""The one place where "None means the task's default" is resolved.

A `Config` may leave settings unset (`train.lr`, `train.schedule`, `train.image_size`,
`transfer.backbone_lr_mult`, `transfer.cache_features`, `transfer.probe_epochs`,
`data.color_jitter`, `model.head=default`); `resolve_defaults` fills each from the task's class
attributes (and the strategy), so the run's `config.yaml` records the values it really used.

Settings that stay "auto" on purpose, because they depend on the machine or change per epoch:
`train.device`, `train.amp`, `train.channels_last` (on for CUDA), `data.num_workers` (min(4,
cores - 1)), and `transfer.bn` (eval while every stage is frozen, else train).
"""
from __future__ import annotations

from typing import Any

from .config import Config, replace


def resolve_defaults(cfg: Config, task: Any) -> Config:
    """`cfg` with every task-dependent default filled in (idempotent)."""
    tr, t = cfg.train, cfg.transfer
    head = cfg.model.head if not isinstance(cfg.model.head, str) else task.resolve_head(cfg.model.head)
    probe_epochs = t.probe_epochs
    if probe_epochs is None and t.strategy == "lp_ft":
        # Kumar et al. train the probe to convergence before fine-tuning; one epoch of a head on a
        # few images is far from that, so half the budget.
        probe_epochs = max(1, tr.epochs // 2)
    return replace(
        cfg,
        train={"lr": tr.lr or task.default_lr_for(t.strategy),
               "schedule": tr.schedule or task.default_schedule,
               "image_size": tr.image_size or task.default_image_size},
        transfer={"backbone_lr_mult": task.default_backbone_lr_mult if t.backbone_lr_mult is None
                  else t.backbone_lr_mult,
                  "cache_features": task.default_cache_features(t.strategy) if t.cache_features is None
                  else t.cache_features,
                  "probe_epochs": probe_epochs},
        data={"color_jitter": task.default_color_jitter if cfg.data.color_jitter is None
              else cfg.data.color_jitter},
        model={"head": head})
