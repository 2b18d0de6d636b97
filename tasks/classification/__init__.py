"""Image classification: a linear (or MLP) head over a registry backbone.

Data: `data.format=folder` (`data.root` with `train/` and `val/`, or one folder of class folders
split by `data.val_split`, stratified and seeded) or `data.format=csv`
(`data.train.annotations` = a CSV `path,label`, paths under `data.train.images` or the CSV's
folder). A linear probe trains its head on pooled features computed once (`transfer.cache_features`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vision_transfer.data.dataset import ImageDataset, albumentations_transform, check_images, warn_skipped
from vision_transfer.data.folders import (LabelledImages, per_class_subset, read_csv, read_image_folder,
                                          stratified_split)
from vision_transfer.data.image import read_image
from vision_transfer.data.transforms import classification_transforms
from vision_transfer.errors import VTError
from vision_transfer.task import TASKS, DataSplits, Task, TrainingPlan

from .features import FeatureDataset, cache_key, cached_features
from .heads import HEADS, PooledHead
from .metrics import classification_metrics
from .model import Classifier, build_classifier

register_head = HEADS.register


def read_split_items(data: Any, *, seed: int) -> tuple[LabelledImages, LabelledImages | None]:
    """The labelled train and val images a data config describes."""
    fmt = data.format or ("csv" if data.train.annotations else "folder")
    if fmt == "folder":
        train_root = data.train.images or (Path(data.root) / "train" if data.root else None)
        if train_root is None:
            raise VTError("data.root is not set: give data.root=DIR (with train/ and val/, or class folders)")
        if not data.train.images and not Path(train_root).is_dir():
            items = read_image_folder(data.root, classes=data.classes)   # one folder: split it
            return stratified_split(items, val_fraction=data.val_split, seed=seed) if data.val_split else (items, None)
        train = read_image_folder(train_root, classes=data.classes)
        val_root = data.val.images or (Path(data.root) / "val" if data.root else None)
        if val_root is not None and Path(val_root).is_dir():
            return train, read_image_folder(val_root, classes=train.classes)
        return stratified_split(train, val_fraction=data.val_split, seed=seed) if data.val_split else (train, None)
    if fmt == "csv":
        if not data.train.annotations:
            raise VTError("data.format=csv needs data.train.annotations=FILE.csv (columns path,label)")
        train = read_csv(data.train.annotations, root=data.train.images or data.root, classes=data.classes)
        if data.val.annotations:
            return train, read_csv(data.val.annotations, root=data.val.images or data.root, classes=train.classes)
        return stratified_split(train, val_fraction=data.val_split, seed=seed) if data.val_split else (train, None)
    raise VTError(f"data.format={fmt} is not a classification format; use folder or csv")


def _dataset(items: LabelledImages, transform, seed: int, info: dict, split: str) -> ImageDataset:
    good, bad = check_images(items.paths)
    warn_skipped(bad)
    info[f"{split}_skipped"] = len(bad)
    items = items.subset(good)
    return ImageDataset(items.paths, [{"label": lab} for lab in items.labels],
                        transform=albumentations_transform(transform), seed=seed)


class HeadOnly(nn.Module):
    """Trains the classifier of a PooledHead on cached pooled features."""

    def __init__(self, classifier: nn.Module, label_smoothing: float, criterion: nn.Module | None = None) -> None:
        super().__init__()
        self.classifier, self.label_smoothing, self.criterion = classifier, label_smoothing, criterion

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    monitor = "accuracy"
    default_head = "linear"
    default_image_size = 224
    default_lr = 1e-3
    model_options = ("dropout", "hidden_dim")
    loss_options = ("label_smoothing", "class_weights", "loss", "focal_gamma")

    def default_lr_for(self, strategy: str) -> float:
        # a probe trains only a linear layer; fine-tuning moves pretrained weights and wants less
        return 1e-2 if strategy == "linear_probe" else 1e-3

    def build_model(self, *, backbone, num_classes, head="linear", **options) -> nn.Module:
        return build_classifier(backbone=backbone, num_classes=num_classes, head=head, **options)

    def build_datasets(self, *, data, image_size, preprocessing, seed, augment=True) -> DataSplits:
        train_items, val_items = read_split_items(data, seed=data.split_seed)
        if data.max_per_class:
            train_items = per_class_subset(train_items, per_class=data.max_per_class, seed=seed)
        info: dict = {}
        t_train = classification_transforms("train", image_size=image_size, preprocessing=preprocessing,
                                            augment=augment, crop_scale=data.crop_scale, vflip=data.vflip,
                                            rotate90=data.rotate90, color_jitter=data.color_jitter)
        t_val = classification_transforms("val", image_size=image_size, preprocessing=preprocessing)
        train = _dataset(train_items, t_train, seed, info, "train")
        val = _dataset(val_items, t_val, seed, info, "val") if val_items is not None and len(val_items) else None
        if len(train) == 0:
            raise VTError("no readable training images")
        # the same images without augmentation: what cached features are computed from
        train.eval_transform = albumentations_transform(t_val)
        return DataSplits(train=train, val=val, classes=train_items.classes, info=info)

    def train_step(self, model, batch) -> dict[str, torch.Tensor]:
        inputs = batch["features"] if "features" in batch else batch["image"]
        logits = model(inputs)
        inner = _unwrap(model)
        criterion = getattr(inner, "criterion", None)   # class weights / focal (engine/losses.py)
        if criterion is not None:
            return {"loss": criterion(logits, batch["label"])}
        return {"loss": F.cross_entropy(logits, batch["label"], label_smoothing=getattr(inner, "label_smoothing", 0.0))}

    def evaluate(self, model, loader, *, device, classes, amp_dtype=None) -> dict[str, Any]:
        logits, labels = [], []
        for batch in loader:
            inputs = (batch["features"] if "features" in batch else batch["image"]).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits.append(model(inputs).float().cpu())
            labels.append(batch["label"])
        return classification_metrics(torch.cat(logits), torch.cat(labels), classes)

    def prepare_training(self, model, splits, *, strategy, cache_features, device, batch_size, num_workers,
                         cache_dir=None) -> TrainingPlan:
        use_cache = strategy == "linear_probe" if cache_features is None else cache_features
        if not use_cache or strategy != "linear_probe":
            return TrainingPlan(model=model, train=splits.train, val=splits.val)
        if not isinstance(model.head, PooledHead):
            return TrainingPlan(model=model, train=splits.train, val=splits.val)  # custom head: no cache
        train_feats = self._features(model, ImageDataset(splits.train.paths, splits.train.targets,
                                                       transform=splits.train.eval_transform), device, batch_size, num_workers, "train")
        val_data = None
        if splits.val is not None:
            val_data = FeatureDataset(*self._features(model, splits.val, device, batch_size, num_workers, "val"))
        head_only = HeadOnly(model.head.classifier, model.label_smoothing, getattr(model, "criterion", None))
        return TrainingPlan(model=head_only, train=FeatureDataset(*train_feats), val=val_data, export=model)

    def _features(self, model: Classifier, dataset: ImageDataset, device, batch_size, num_workers, desc):
        bb = model.backbone
        key = cache_key(backbone=bb.name, weights=bb.weights, preprocessing=bb.preprocessing.to_dict(),
                        image_size=int(dataset[0]["image"].shape[-1]), paths=dataset.paths,
                        channels=[f.channels for f in bb.stage_info])
        return cached_features(bb, model.head.pooled, dataset, key=key, device=device,
                               batch_size=max(batch_size, 64), num_workers=num_workers or 0, desc=desc)

    def write_artifacts(self, out_dir, *, metrics, classes) -> None:
        cm = metrics.get("confusion_matrix")
        if cm is not None:
            from vision_transfer.evaluation.plots import confusion_matrix_png

            confusion_matrix_png(cm, classes, Path(out_dir) / "confusion_matrix.png")

    @torch.inference_mode()
    def predict(self, model, images, *, out_dir, meta, device, topk: int = 5, **_: Any) -> list[dict]:
        from vision_transfer.backbones.base import Preprocessing
        from vision_transfer.data.image import BadImage

        t = classification_transforms("val", image_size=meta["image_size"],
                                      preprocessing=Preprocessing.from_dict(meta["preprocessing"]))
        classes, rows, skipped = meta["classes"], [], 0
        for path in images:
            try:
                x = t(image=read_image(path))["image"][None].to(device)
            except BadImage:
                skipped += 1
                continue
            p = model(x).float().softmax(1)[0].cpu()
            scores, idx = p.topk(min(topk, len(classes)))
            rows.append({"image": str(path), "label": classes[int(idx[0])], "score": float(scores[0]),
                         "topk": [{"label": classes[int(i)], "score": float(s)} for s, i in zip(scores, idx)]})
        (Path(out_dir) / "predictions.json").write_text(json.dumps(rows, indent=2) + "\n")
        if skipped:
            warn_skipped([f"{skipped} files"])
        return rows


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


__all__ = ["Classification", "Classifier", "HEADS", "PooledHead", "register_head"]
