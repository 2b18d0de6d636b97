"""The config side of class imbalance (this module, like `api.py`, reads a Config):

- `train.class_weights=auto|inverse|effective|[w0, w1, ...]`: auto = inverse frequency, counted on
  the training split (images per class; pixels per class for segmentation); effective = Cui et
  al.'s effective number (`engine/losses.py`). Resolved to a list before the model is built, so
  checkpoints and summary.json hold the numbers that trained.
- `train.loss=focal` (`train.focal_gamma`): classification and segmentation.
- `data.sampler=balanced`: the training split resampled per epoch (`data/balance.py`).
"""
from __future__ import annotations

from typing import Any

from .config import Config
from .errors import VTError
from .task import DataSplits, Task, TrainingPlan

RULES = {"auto": "inverse", "inverse": "inverse", "effective": "effective"}


def resolve_loss_options(cfg: Config, task: Task, splits: DataSplits, options: dict[str, Any]) -> dict:
    """Turns a named `class_weights` rule in `options` into numbers; returns what to record."""
    spec = options.get("class_weights")
    wants = {k for k in ("class_weights", "loss") if k in options}
    if cfg.train.class_weights is not None and "class_weights" not in options:
        raise VTError(f"train.class_weights is not supported by the {task.name} task (classification, segmentation)")
    if cfg.train.loss != "ce" and "loss" not in wants:
        raise VTError(f"train.loss={cfg.train.loss} is not supported by the {task.name} task (classification, "
                      "segmentation)")
    if not isinstance(spec, str):
        return {}
    from .data.balance import class_counts
    from .engine.losses import class_weights_from_counts

    counts = class_counts(splits.train, len(splits.classes))
    options["class_weights"] = class_weights_from_counts(counts, rule=RULES[spec])
    return {"class_weights": {"rule": RULES[spec], "counts": dict(zip(splits.classes, counts)),
                              "weights": dict(zip(splits.classes, options["class_weights"]))}}


def resolve_sampler(cfg: Config, plan: TrainingPlan, splits: DataSplits) -> dict:
    """`data.sampler=balanced`: wraps `plan.train` in place; returns what to record."""
    if cfg.data.sampler != "balanced":
        return {}
    from .data.balance import balanced

    plan.train = balanced(plan.train, len(splits.classes), seed=cfg.train.seed)
    return {"sampler": "balanced"}
