"""The segmentation task plugin: U-Net (smp decoder) over any registry backbone.

    vt train segmentation data.format=masks data.train.images=tiles/images data.train.masks=tiles/masks \
        data.val.images=val/images data.val.masks=val/masks "data.classes=[background, nucleus]"
    vt predict segmentation --checkpoint runs/.../checkpoints/best.pt tiles/ --out preds/

Samples are `{"image", "mask": (H, W) int64, 255 = ignore}`; metrics are `mIoU`, `mDice`,
`pixel_accuracy`, `per_class_IoU` (and `per_class_Dice`, `confusion_matrix`) from one confusion
matrix over the whole validation split. A custom decoder is one decorator:

    from vision_transfer.tasks.segmentation import register_head
    @register_head("my_head")
    def my_head(*, feature_info, num_classes, **options) -> nn.Module: ...   # forward(features) -> logits
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vision_transfer.backbones.base import Backbone, Preprocessing
from vision_transfer.files import unique_stems
from vision_transfer.task import DataSplits, Task, TrainingPlan

from .data import build_splits, collate, eval_transforms
from .losses import SegmentationLoss
from .metrics import ConfusionMatrix, segmentation_metrics
from .model import SEGMENTATION_HEADS, SegmentationModel, build_segmentation_model, load_torchvision_head
from .predict import class_colours, overlay, predict_masks, save_label_mask, save_png

GALLERY_SIZE = 8


def register_head(name: str | None = None, *, override: bool = False):
    """Decorator registering a decoder builder `f(*, feature_info, num_classes, **options) -> nn.Module`."""
    return SEGMENTATION_HEADS.register(name, override=override)


class Segmentation(Task):
    name = "segmentation"
    monitor = "mIoU"
    heads = SEGMENTATION_HEADS
    default_head = "unet"
    default_image_size = 256
    # The decoder starts from random weights, the encoder from ImageNet's: the decoder learns at
    # 2e-3 (AdamW), the encoder at half that. A constant lr after the warm-up: a dozen tiles give
    # only ~90 steps, and cosine decay left the U-Net under-trained. Measured on 12 generated
    # 128-px tiles, 30 epochs, 3 seeds each (benchmarks/segmentation_vs_smp.py), mean mIoU:
    #   binary:   cosine 1e-3 0.961, constant 1e-3 0.981, constant 2e-3/1e-3 0.985; smp 0.981
    #   4 shapes:                      constant 1e-3 0.975, constant 2e-3/1e-3 0.980; smp 0.977
    default_lr = 2e-3
    default_backbone_lr_mult = 0.5
    default_schedule = "constant"
    model_options = ("decoder_channels", "head_weights")
    loss_options = ("dice_weight", "class_weights", "loss", "focal_gamma")

    def build_model(self, *, backbone: Backbone, num_classes: int, head: str | nn.Module | Callable = "unet",
                    decoder_channels: Sequence[int] | None = None, head_weights: str | None = None,
                    dice_weight: float = 1.0,
                    class_weights: Sequence[float] | None = None, loss: str = "ce", focal_gamma: float = 2.0,
                    **_: Any) -> SegmentationModel:
        model = build_segmentation_model(backbone=backbone, num_classes=num_classes, head=self.resolve_head(head),
                                         decoder_channels=decoder_channels, head_weights=head_weights)
        model.criterion = SegmentationLoss(num_classes=num_classes, dice_weight=dice_weight,
                                           class_weights=class_weights, focal_gamma=focal_gamma if loss == "focal" else None)
        return model

    def build_datasets(self, *, data: Any, image_size: int, preprocessing: Preprocessing, seed: int,
                       augment: bool = True) -> DataSplits:
        return build_splits(data=data, image_size=image_size, preprocessing=preprocessing, seed=seed,
                            augment=augment)

    def prepare_training(self, model: nn.Module, splits: DataSplits, **kwargs: Any) -> TrainingPlan:
        """Loads torchvision head weights asked for with model.head_weights, then trains as is."""
        if getattr(model, "head_weights", None):
            head, weights = model.head_weights
            load_torchvision_head(model.decoder, head=head, backbone=model.backbone.name, weights=weights)
        return TrainingPlan(model=model, train=splits.train, val=splits.val)

    def collate(self, samples: Sequence[dict]) -> dict:
        return collate(samples)

    def train_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(batch["image"])
        return getattr(model, "module", model).criterion(logits, batch["mask"])

    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device, classes: list[str],
                 amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
        cm = ConfusionMatrix(len(classes), device=device)
        gallery: list[dict] = []
        dataset = loader.dataset
        for batch in loader:
            batch = self.to_device(batch, device)
            masks = batch["mask"]
            preds = predict_masks(model, batch["image"], [tuple(m.shape[-2:]) for m in masks])
            for idx, p, t in zip(batch["index"].tolist(), preds, masks):
                cm.update(p, t)
                if len(gallery) < GALLERY_SIZE and hasattr(dataset, "items"):
                    gallery.append({"image": str(dataset.items[idx][0]), "pred": p.to("cpu", torch.uint8).numpy()})
        # DDP: the engine evaluates on rank 0 over the whole val split, so the matrix is complete
        # here; a caller that shards the split sums the matrices with ConfusionMatrix.all_reduce.
        return {**segmentation_metrics(cm.matrix, classes), "_gallery": gallery}

    def write_artifacts(self, out_dir: Any, *, metrics: dict[str, Any], classes: list[str]) -> None:
        """confusion_matrix.png, and overlays of the first validation images when evaluated."""
        from vision_transfer.data.image import read_image
        from vision_transfer.evaluation.plots import confusion_matrix_png

        out = Path(out_dir)
        if metrics.get("confusion_matrix") is not None:
            confusion_matrix_png(metrics["confusion_matrix"], classes, out / "confusion_matrix.png")
        items = metrics.get("_gallery") or []
        if items:
            (out / "gallery").mkdir(parents=True, exist_ok=True)
            colours = class_colours(classes)
            for it, stem in zip(items, unique_stems([Path(i["image"]) for i in items])):
                save_png(overlay(read_image(it["image"]), it["pred"], classes, colours), out / "gallery" / f"{stem}.png")

    def predict_batch(self, model: nn.Module, images: list[Any], *, meta: dict, device: torch.device,
                      **_: Any) -> list[dict]:
        """Per image: `{"class_pixels": {class: count}}` and the label mask at the image's own size
        (private `_mask`, drawn by `draw`)."""
        tf = eval_transforms(image_size=int(meta["image_size"]), preprocessing=Preprocessing.from_dict(meta["preprocessing"]))
        x = torch.stack([tf(image=im)["image"] for im in images]).to(device)
        masks = [m.cpu().numpy() for m in predict_masks(model, x, [im.shape[:2] for im in images])]
        classes = list(meta["classes"])
        return [{"class_pixels": {c: int(n) for c, n in zip(classes, np.bincount(m.reshape(-1), minlength=len(classes)))},
                 "_mask": m} for m in masks]

    def draw(self, image: Any, result: dict, *, out_dir: Any, stem: str, meta: dict) -> dict:
        """`<stem>.png` (class indices) and `<stem>_overlay.png` (tinted, with a legend)."""
        classes, out = list(meta["classes"]), Path(out_dir)
        palette = (meta.get("config") or {}).get("data", {}).get("palette")
        save_label_mask(result["_mask"], out / f"{stem}.png", len(classes))
        save_png(overlay(image, result["_mask"], classes, class_colours(classes, palette)), out / f"{stem}_overlay.png")
        return {"mask": f"{stem}.png", "overlay": f"{stem}_overlay.png"}


__all__ = ["SEGMENTATION_HEADS", "Segmentation", "SegmentationModel", "build_segmentation_model", "register_head"]
