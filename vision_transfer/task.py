"""The Task plugin protocol and the TASKS registry.

The engine and the CLI talk to a task only through this protocol, so a fourth task is one new
folder (or package) with a `Task` subclass, registered in code or by an entry point:

    @TASKS.register("my_task")              # or [project.entry-points."vision_transfer.tasks"]
    class MyTask(Task): ...                 #    my_task = "my_pkg.task:MyTask"

A task declares its heads in one registry (`Task.heads`; `vt.register_head(task, name)` adds
one), its defaults as class attributes (resolved in one place: `vision_transfer.defaults`), and
supplies what differs: the model, the data, the loss, the metrics, "predict one batch" and
"draw one result" (`vision_transfer.engine.predict` owns the image loop).

Data contract (one sample dict for every task; `image` is HxWx3 uint8 RGB before transforms):
- classification: `{"image", "label": int}`
- detection: `{"image", "boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,)}` (labels from 0;
  background exists only inside the Faster R-CNN head)
- segmentation: `{"image", "mask": (H, W) int64, 255 = ignore}`
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .backbones.base import Backbone, Preprocessing
from .errors import VTError
from .plugins import TASKS, resolve  # noqa: F401 - TASKS: the registry, re-exported
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
    heads: Registry = Registry("head")   # `model.head=NAME` looks up here; each task class gets its own
    default_head: str = "default"  # what `model.head=default` means
    default_image_size: int = 224
    default_lr: float = 1e-3
    default_schedule: str = "cosine"   # train.schedule when not given: cosine | flat_cosine | constant
    default_backbone_lr_mult: float = 1.0   # transfer.backbone_lr_mult when not given
    default_color_jitter: float = 0.0       # data.color_jitter when not given
    model_options: tuple[str, ...] = ()   # ModelConfig fields this task's build_model accepts
    loss_options: tuple[str, ...] = ()    # TrainConfig fields it accepts too (label_smoothing, dice_weight...)
    data_options: tuple[str, ...] = ()    # DataConfig fields it accepts too (classification: multilabel)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A task class that declares no `heads` gets an empty registry of its own (a subclass of a
        built-in task inherits, and so shares, its parent's heads)."""
        super().__init_subclass__(**kwargs)
        if "heads" not in cls.__dict__ and cls.heads is Task.heads:
            cls.heads = Registry(f"{cls.__name__} head")

    def configured(self, cfg: Any) -> Task:
        """The task as a run with `cfg` sees it: itself, or a variant that a data setting selects
        (classification with `data.multilabel=true`: mAP monitored, several labels per image).
        Every entry point that holds a config (train, eval, lr-find, study, doctor) asks for it."""
        if getattr(cfg.data, "multilabel", False):
            raise VTError(f"data.multilabel=true applies to classification, not to the {self.name} task")
        return self

    def default_lr_for(self, strategy: str) -> float:
        """The learning rate when train.lr is not given (a probe tolerates more than a fine-tune)."""
        return self.default_lr

    def default_cache_features(self, strategy: str) -> bool:
        """transfer.cache_features when not given (classification: on for a linear probe)."""
        return False

    # -- model ---------------------------------------------------------------------------
    def build_model(self, *, backbone: Backbone, num_classes: int, head: str | nn.Module | Callable = "default",
                    **options: Any) -> nn.Module:
        """The whole model; it must contain `backbone` as a submodule (found by type)."""
        raise NotImplementedError

    def resolve_head(self, head: Any) -> Any:
        """`"default"` -> this task's default head name; a name must be registered; objects pass."""
        if head is None or head == "default":
            head = self.default_head
        if isinstance(head, str):
            self.heads.get(head)   # unknown -> one-line error listing close matches
        return head

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

    def predict_batch(self, model: nn.Module, images: list[Any], *, meta: dict, device: torch.device,
                      **options: Any) -> list[dict]:
        """Predictions for a batch of HxWx3 uint8 RGB arrays (at their own sizes), one JSON-able
        dict each (model in eval mode, inference mode and autocast set by the caller). A result
        may carry private entries (keys starting with "_", e.g. a mask) for `draw`."""
        raise NotImplementedError

    def draw(self, image: Any, result: dict, *, out_dir: Any, stem: str, meta: dict) -> dict:
        """Write the drawings of one result under `out_dir` (atomically, named from `stem`);
        returns the file names to record in predictions.json (e.g. `{"drawing": "x.png"}`)."""
        return {}


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


def get_task(name: str | Task) -> Task:
    """The registered task plugin `name` (built-in, registered in code, or from an installed
    package's entry point), imported on first use; a registered class is instantiated once."""
    if isinstance(name, Task):
        return name
    obj = resolve(name)
    if isinstance(obj, type) and issubclass(obj, Task):
        obj = obj()
        obj.name = name   # the registered name is the task's identity (a subclass of a built-in too)
        TASKS.add(name, obj, override=True, **TASKS.meta(name))
    if not isinstance(obj, Task):
        raise TypeError(f"task {name!r} is registered as {obj!r}, not a vision_transfer Task")
    return obj


def find_backbone(model: nn.Module) -> Backbone:
    """The registry backbone inside a task model (every task model holds exactly one)."""
    for m in model.modules():
        if isinstance(m, Backbone):
            return m
    raise TypeError(f"{type(model).__name__} holds no vision_transfer Backbone")
