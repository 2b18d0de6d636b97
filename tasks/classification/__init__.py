"""Image classification: a linear (or MLP) head over a registry backbone.

Data: `data.format=folder` (`data.root` with `train/` and `val/`, or one folder of class folders
split by `data.val_split`, stratified and seeded) or `data.format=csv`
(`data.train.annotations` = a CSV `path,label`, paths under `data.train.images` or the CSV's
folder). A linear probe trains its head on pooled features computed once (`transfer.cache_features`).
Several labels per image: `data.format=csv data.multilabel=true` (multilabel.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vision_transfer.data.dataset import ImageDataset, albumentations_transform, check_images, warn_skipped
from vision_transfer.data.folders import (LabelledImages, MultiLabelImages, per_class_subset, read_csv,
                                          read_image_folder, stratified_split)
from vision_transfer.data.transforms import classification_transforms
from vision_transfer.errors import VTError
from vision_transfer.task import DataSplits, Task, TrainingPlan

from .features import FeatureDataset, cache_key, cached_features, stage_columns
from .heads import HEADS, PooledHead
from .metrics import classification_metrics, multilabel_metrics
from .model import Classifier, build_classifier
from .probe import SolvedProbe, choose, layer_sets, resolve_solver

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


def _dataset(items: LabelledImages | MultiLabelImages, transform, seed: int, info: dict, split: str) -> ImageDataset:
    good, bad = check_images(items.paths)
    warn_skipped(bad)
    info[f"{split}_skipped"] = len(bad)
    items = items.subset(good)
    targets = [{"label": items.multi_hot(i)} for i in range(len(items))] if isinstance(items, MultiLabelImages) \
        else [{"label": lab} for lab in items.labels]
    return ImageDataset(items.paths, targets, transform=albumentations_transform(transform), seed=seed)


class HeadOnly(nn.Module):
    """Trains the classifier of a PooledHead on cached pooled features."""

    def __init__(self, classifier: nn.Module, label_smoothing: float, criterion: nn.Module | None = None) -> None:
        super().__init__()
        self.classifier, self.label_smoothing, self.criterion = classifier, label_smoothing, criterion

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


class Classification(Task):
    name = "classification"
    monitor = "accuracy"
    heads = HEADS
    default_head = "linear"
    default_image_size = 224
    default_lr = 1e-3
    model_options = ("dropout", "hidden_dim")
    loss_options = ("label_smoothing", "class_weights", "loss", "focal_gamma")
    data_options = ("multilabel",)

    default_color_jitter = 0.2

    def configured(self, cfg: Any) -> Task:
        if cfg.data.multilabel:
            from .multilabel import MultiLabelView

            return MultiLabelView.view_of(self, cfg)
        return self

    def default_lr_for(self, strategy: str) -> float:
        # a probe trains only a linear layer; fine-tuning moves pretrained weights and wants less
        return 1e-2 if strategy == "linear_probe" else 1e-3

    def default_cache_features(self, strategy: str) -> bool:
        return strategy == "linear_probe"   # pooled features computed once: ~10x faster

    def build_model(self, *, backbone, num_classes, head="linear", **options) -> nn.Module:
        return build_classifier(backbone=backbone, num_classes=num_classes, head=self.resolve_head(head), **options)

    def build_datasets(self, *, data, image_size, preprocessing, seed, augment=True) -> DataSplits:
        train_items, val_items = self.read_items(data)
        if data.max_per_class and isinstance(train_items, LabelledImages):   # multi-label: api's subsample_train
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

    def read_items(self, data: Any) -> tuple[LabelledImages, LabelledImages | None]:
        return read_split_items(data, seed=data.split_seed)

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
            logits.append(model(inputs).float().cpu())   # autocast: set by the engine
            labels.append(batch["label"])
        labels = torch.cat(labels)
        if labels.ndim == 2:   # multi-hot targets: data.multilabel
            return multilabel_metrics(torch.cat(logits), labels, classes)
        return classification_metrics(torch.cat(logits), labels, classes)

    def prepare_training(self, model, splits, *, strategy, cache_features, device, batch_size, num_workers,
                         cache_dir=None, probe_solver: str = "auto", probe_layers: Any = "last",
                         probe_C: float | None = None, probe_select: str = "auto", **_: Any) -> TrainingPlan:
        use_cache = bool(cache_features)   # resolved per strategy (Task.default_cache_features)
        if strategy != "linear_probe" and probe_layers != "last":
            raise VTError(f"transfer.probe_layers={probe_layers} applies to transfer.strategy=linear_probe, "
                          f"not {strategy}")
        if strategy != "linear_probe" or not isinstance(model.head, PooledHead):
            return TrainingPlan(model=model, train=splits.train, val=splits.val)  # custom head: no cache
        solver = resolve_solver(probe_solver, model.head, cached=bool(use_cache))
        if getattr(model, "criterion", None) is not None:   # class weights / focal loss
            if solver == "lbfgs" and probe_solver == "lbfgs":
                raise VTError("transfer.probe_solver=lbfgs fits plain cross-entropy: it cannot apply "
                              "train.class_weights or train.loss=focal (use probe_solver=sgd, or auto)")
            solver = "sgd"
        candidates = layer_sets(probe_layers, len(model.backbone.stages))
        if not use_cache:
            if candidates != [[len(model.backbone.stages) - 1]]:
                raise VTError("transfer.probe_layers needs cached features: drop transfer.cache_features=false")
            return TrainingPlan(model=model, train=splits.train, val=splits.val)
        train = self._features(model, ImageDataset(splits.train.paths, splits.train.targets,
                                                   transform=splits.train.eval_transform),
                               device, batch_size, num_workers, "train")
        val = self._features(model, splits.val, device, batch_size, num_workers, "val") \
            if splits.val is not None else None
        channels = [f.channels for f in model.backbone.stage_info]
        common = dict(candidates=candidates, C=probe_C, select=probe_select, label_smoothing=model.label_smoothing)
        if solver == "lbfgs":
            solve = SolvedProbe(model, channels=channels, train=train, val=val, classes=splits.classes, **common)
            return TrainingPlan(model=model, train=FeatureDataset(*train),
                                val=FeatureDataset(*val) if val is not None else None, export=model, solve=solve)
        stages = candidates[0]
        if len(candidates) > 1:   # sgd with auto: the stages chosen by the (fast, convex) linear probe
            stages = choose(channels=channels, train=train, val=val, num_classes=len(splits.classes), **common)[0]
        options = {}
        if stages != [len(channels) - 1]:
            model.use_stages(stages)
            options["probe_layers"] = stages
        cols = stage_columns(channels, stages)
        val_data = FeatureDataset(val[0][:, cols], val[1]) if val is not None else None
        head_only = HeadOnly(model.head.classifier, model.label_smoothing, getattr(model, "criterion", None))
        return TrainingPlan(model=head_only, train=FeatureDataset(train[0][:, cols], train[1]), val=val_data,
                            export=model, model_options=options)

    def _features(self, model: Classifier, dataset: ImageDataset, device, batch_size, num_workers, desc):
        """Pooled features of every stage, concatenated (see features.stage_columns)."""
        bb = model.backbone
        stages = list(range(len(bb.stage_info)))
        multi = np.ndim(dataset.targets[0]["label"]) > 0 if len(dataset) else False
        key = cache_key(backbone=bb.name, weights=bb.weights, preprocessing=bb.preprocessing.to_dict(),
                        image_size=int(dataset[0]["image"].shape[-1]), paths=dataset.paths,
                        channels=[f.channels for f in bb.stage_info], stages=stages,
                        labels=[np.asarray(t["label"]).tolist() for t in dataset.targets] if multi else None)
        return cached_features(bb, model.head.pool_map, dataset, key=key, device=device,
                               batch_size=max(batch_size, 64), num_workers=num_workers or 0, desc=desc,
                               all_stages=True)

    def write_artifacts(self, out_dir, *, metrics, classes) -> None:
        cm = metrics.get("confusion_matrix")
        if cm is not None:
            from vision_transfer.evaluation.plots import confusion_matrix_png

            confusion_matrix_png(cm, classes, Path(out_dir) / "confusion_matrix.png")

    def predict_batch(self, model, images, *, meta, device, topk: int = 5, score_threshold: float | None = None,
                      **_: Any) -> list[dict]:
        """Per image: `{"label", "score", "topk": [{"label", "score"}]}` (softmax scores); a
        multi-label model: `{"labels": [classes with sigmoid >= score_threshold (0.5)], "scores": {class: score}}`."""
        from vision_transfer.backbones.base import Preprocessing

        t = classification_transforms("val", image_size=meta["image_size"],
                                      preprocessing=Preprocessing.from_dict(meta["preprocessing"]))
        x = torch.stack([t(image=im)["image"] for im in images]).to(device)
        logits, classes, rows = model(x).float().cpu(), meta["classes"], []
        if meta.get("model_spec", {}).get("options", {}).get("multilabel"):
            threshold = 0.5 if score_threshold is None else score_threshold
            for p in logits.sigmoid():
                rows.append({"labels": [c for c, s in zip(classes, p.tolist()) if s >= threshold],
                             "scores": {c: round(float(s), 6) for c, s in zip(classes, p.tolist())},
                             "threshold": threshold})
            return rows
        probs = logits.softmax(1)
        for p in probs:
            scores, idx = p.topk(min(topk, len(classes)))
            rows.append({"label": classes[int(idx[0])], "score": float(scores[0]),
                         "topk": [{"label": classes[int(i)], "score": float(s)} for s, i in zip(scores, idx)]})
        return rows


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


__all__ = ["Classification", "Classifier", "HEADS", "PooledHead", "register_head"]
