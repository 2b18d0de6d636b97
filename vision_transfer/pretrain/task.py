"""Self-supervised pretraining as a `Task`, so the shared `fit` trains it (checkpoints, resume,
AMP, DDP, progress, metrics.jsonl): no second training loop.

The "model" is a method module from `methods.py` (backbone + small heads, forward -> losses);
`evaluate` embeds a monitoring set with the backbone alone and reports `rankme`, `uniformity`
and, with a labelled `pretrain.knn_val` folder, leave-one-out kNN accuracy.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones.base import Preprocessing
from ..data.dataset import ImageDataset
from ..task import DataSplits, Task
from .methods import pooled
from .monitor import embedding_metrics
from .views import MultiView, monitor_dataset, view_transform

# augmentation keys of PretrainConfig that `view_transform` takes
VIEW_KEYS = ("crop_scale", "hflip", "vflip", "rotate90", "color_jitter", "hue", "grey", "blur", "blur_sigma")


class Pretraining(Task):
    """`data` for `build_datasets` is a dict: `paths` (unlabelled images), `views` (1 or 2),
    `view` (kwargs of `view_transform`), `knn_val`, `monitor_images`, `knn_k`."""

    name = "pretrain"
    default_image_size = 64
    default_lr = 1e-3
    default_schedule = "cosine"

    def __init__(self, *, knn: bool = False, knn_k: int = 20) -> None:
        # best.pt follows kNN accuracy with labels, else the effective rank (RankMe's criterion)
        self.monitor = "knn_accuracy" if knn else "rankme"
        self.knn_k = knn_k

    def build_datasets(self, *, data: Any, image_size: int, preprocessing: Preprocessing, seed: int,
                       augment: bool = True) -> DataSplits:
        paths: list[Path] = data["paths"]
        views = MultiView(view_transform(image_size=image_size, preprocessing=preprocessing, **data["view"]),
                          data["views"])
        train = ImageDataset(paths, [{} for _ in paths], transform=views, seed=seed)
        val, classes = monitor_dataset(paths=paths, knn_val=data.get("knn_val"), limit=data["monitor_images"],
                                       image_size=image_size, preprocessing=preprocessing, seed=seed)
        return DataSplits(train=train, val=val, classes=classes,
                          info={"num_images": len(paths), "monitor_images": len(val)})

    def collate(self, samples: Sequence[dict]) -> Any:
        return torch.utils.data.default_collate(list(samples))

    def batch_size_of(self, batch: Any) -> int:
        return len(batch["views"][0]) if "views" in batch else len(batch["image"])

    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return model(batch["views"])

    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device, classes: list[str],
                 amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
        feats, labels = [], []
        for batch in loader:
            x = batch["image"].to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                feats.append(pooled(model.backbone, x).float().cpu())
            labels.append(batch["label"])
        x, y = torch.cat(feats), torch.cat(labels).long()
        return embedding_metrics(x, y if classes else None, k=self.knn_k)
