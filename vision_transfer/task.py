"""The Task plugin protocol and the TASKS registry.

The engine and the CLI talk to a task only through this protocol, so a fourth task is one new
folder under `tasks/` whose `__init__.py` registers an instance:

    @TASKS.register("classification")
    class Classification(Task): ...

Data contract (one sample dict for every task; `image` is HxWx3 uint8 RGB before transforms):
- classification: `{"image", "label": int}`
- detection: `{"image", "boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,)}` (labels from 0;
  background exists only inside the Faster R-CNN head)
- segmentation: `{"image", "mask": (H, W) int64, 255 = ignore}`
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .backbones.base import Backbone, Preprocessing
from .registry import Registry

IGNORE_INDEX = 255


@dataclass
class DataSplits:
    """What `Task.build_datasets` returns. `val` may be None (no validation data)."""

    train: Dataset
    val: Dataset | None
    classes: list[str]
    info: dict = field(default_factory=dict)   # counts of skipped files, dropped boxes, ...


class Task:
    """Base class of task plugins. Subclasses override what differs."""

    name: str = "task"
    monitor: str = "loss"          # metric that picks best.pt; higher is better unless it is "loss"
    default_head: str = "default"
    default_image_size: int = 224
    default_lr: float = 1e-3
    default_schedule: str = "cosine"   # train.schedule when not given: cosine | flat_cosine | constant
    default_backbone_lr_mult: float = 1.0   # transfer.backbone_lr_mult when not given
    model_options: tuple[str, ...] = ()   # ModelConfig fields this task's build_model accepts
    loss_options: tuple[str, ...] = ()    # TrainConfig fields it accepts too (label_smoothing, dice_weight...)

    def default_lr_for(self, strategy: str) -> float:
        """The learning rate when train.lr is not given (a probe tolerates more than a fine-tune)."""
        return self.default_lr

    # -- model ---------------------------------------------------------------------------
    def build_model(self, *, backbone: Backbone, num_classes: int, head: str | nn.Module | Callable = "default",
                    **options: Any) -> nn.Module:
        """The whole model; it must contain `backbone` as a submodule (found by type)."""
        raise NotImplementedError

    def head_spec(self, head: Any) -> str:
        """The name stored in checkpoints for `head` (a registered name, or the object's name)."""
        return head if isinstance(head, str) else getattr(head, "__name__", type(head).__name__)

    # -- data ----------------------------------------------------------------------------
    def build_datasets(self, *, data: Any, image_size: int, preprocessing: Preprocessing, seed: int,
                       augment: bool = True) -> DataSplits:
        raise NotImplementedError

    def collate(self, samples: Sequence[dict]) -> Any:
        return torch.utils.data.default_collate(list(samples))

    def batch_size_of(self, batch: Any) -> int:
        if isinstance(batch, dict):
            first = batch.get("image", next(iter(batch.values())))
            return len(first)
        return len(batch[0])

    def to_device(self, batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
        return _move(batch, device, channels_last)

    # -- training and evaluation ----------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward + loss in train mode: returns {"loss": scalar, ...components}."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device, classes: list[str],
                 amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
        """Metrics over the whole loader (model in eval mode, inference_mode set by the caller)."""
        raise NotImplementedError

    def prepare_training(self, model: nn.Module, splits: DataSplits, *, strategy: str, cache_features: bool | None,
                         device: torch.device, batch_size: int, num_workers: int | None,
                         cache_dir: Any = None, **options: Any) -> TrainingPlan:
        """Hook before `fit`: e.g. a classification linear probe swaps the data for cached features
        and trains only the head. The default trains `model` on the datasets as they are.
        `options`: task-specific settings (classification: probe_solver, probe_layers, ...)."""
        return TrainingPlan(model=model, train=splits.train, val=splits.val)

    def write_artifacts(self, out_dir: Any, *, metrics: dict[str, Any], classes: list[str]) -> None:
        """Plots and files a run folder or an evaluation folder gets besides the metrics."""

    def predict(self, model: nn.Module, images: list[Any], *, out_dir: Any, meta: dict, device: torch.device,
                **options: Any) -> list[dict]:
        """Run on image files; write `out_dir/predictions.json` and the task's drawings."""
        raise NotImplementedError


@dataclass
class TrainingPlan:
    """What `fit` trains (`model`, on `train` / `val`) and what checkpoints store (`export`).

    `solve`: a plan that trains itself instead of `fit` (a convex probe solved on cached features):
    called as `solve(out_dir=, checkpoint_meta=, is_main=, tensorboard=)`, it writes what `fit` writes
    (metrics.jsonl, checkpoints/last.pt and best.pt) and returns a `FitResult`.
    `model_options`: build options the plan decided (e.g. the stages a probe pools), recorded in
    the checkpoint's `model_spec.options` so that the model is rebuilt as it was trained."""

    model: nn.Module
    train: Dataset
    val: Dataset | None
    export: nn.Module | None = None
    solve: Callable[..., Any] | None = None
    model_options: dict = field(default_factory=dict)


def _move(obj: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if channels_last and obj.ndim == 4:
            obj = obj.contiguous(memory_format=torch.channels_last)
        return obj
    if isinstance(obj, dict):
        return {k: _move(v, device, channels_last) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, device, channels_last) for v in obj)
    return obj


TASKS: Registry[Task] = Registry("task")
_PLUGINS = ("classification", "detection", "segmentation")


def get_task(name: str) -> Task:
    """The registered task plugin `name`; the built-in plugins are imported on first use."""
    if name not in TASKS and name in _PLUGINS:
        importlib.import_module(f"vision_transfer.tasks.{name}")
    task = TASKS.get(name)
    return task() if isinstance(task, type) else task   # a registered class is instantiated


def find_backbone(model: nn.Module) -> Backbone:
    """The registry backbone inside a task model (every task model holds exactly one)."""
    for m in model.modules():
        if isinstance(m, Backbone):
            return m
    raise TypeError(f"{type(model).__name__} holds no vision_transfer Backbone")
