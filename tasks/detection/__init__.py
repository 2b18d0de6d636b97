"""The detection task plugin: Faster R-CNN (or RetinaNet, or your head) over any registry backbone.

    vt train detection data.format=coco data.train.images=imgs data.train.annotations=train.json \\
        model.backbone=tf_efficientnet_lite0 train.image_size=256 train.epochs=30
    vt eval detection --checkpoint runs/x/checkpoints/best.pt --out eval/
    vt predict detection --checkpoint best.pt photos/ --out preds/ --score-threshold 0.5

Python: `vision_transfer.api.build_model("detection", backbone="resnet18", num_classes=3,
head="retinanet", image_size=256)`; `register_detection_head` adds heads. Metrics: the twelve COCO
numbers and `per_class_AP` (monitor: `AP`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision_transfer.backbones.base import Backbone, Preprocessing
from vision_transfer.errors import VTError
from vision_transfer.task import DataSplits, Task

from . import coco_detectors
from .data import DetectionDataset, build_splits

from .evaluate import coco_results, draw_detections, evaluate_detector
from .heads import HEADS, DetectorInputs, register_detection_head
from . import one_stage, yolo  # noqa: F401,E402 - registers fcos, ssdlite, yolo
from .model import Detector, FeaturePyramid, select_levels


class Detection(Task):
    name = "detection"
    monitor = "AP"
    heads = HEADS
    default_head = "fasterrcnn"
    default_image_size = 512
    # AdamW 3e-4 with warm-up: measured safe on a dozen tiles; SGD 0.01 and AdamW 1e-3 diverged there.
    default_lr = 3e-4
    default_color_jitter = 0.15   # brightness/contrast on 30 % of the train images
    model_options = ("anchor_sizes", "aspect_ratios", "fpn_channels")
    loss_options = ("image_size",)

    # -- model ---------------------------------------------------------------------------
    def build_model(self, *, backbone: Backbone, num_classes: int, head: str | Callable = "fasterrcnn",
                    anchor_sizes: Sequence[Sequence[int]] | None = None, aspect_ratios: Sequence[float] | None = None,
                    fpn_channels: int = 128, image_size: int | None = None, **_: Any) -> nn.Module:
        """A `Detector` over `backbone`; `head`: a registered name or a builder `f(DetectorInputs)`."""
        if num_classes < 1:
            raise VTError("detection needs at least one object class (data.classes or the annotations' categories)")
        image_size = image_size or self.default_image_size
        head = self.resolve_head(head)
        if isinstance(backbone, coco_detectors.CocoDetectorBackbone):
            return coco_detectors.build(backbone, num_classes=num_classes, head=head, image_size=image_size,
                                        anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios)
        builder, background = _resolve_head(head)
        spec = DetectorInputs(backbone=backbone, num_classes=num_classes, levels=select_levels(backbone),
                              fpn_channels=fpn_channels, anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios,
                              image_size=image_size)
        detector = builder(spec)
        if isinstance(detector, Detector):
            return detector
        return Detector(detector, label_offset=1 if background else 0,
                        freeze_backbone_bn=_pretrained(backbone))

    # -- data ----------------------------------------------------------------------------
    def build_datasets(self, *, data: Any, image_size: int, preprocessing: Preprocessing, seed: int,
                       augment: bool = True) -> DataSplits:
        return build_splits(data=data, image_size=image_size, preprocessing=preprocessing, seed=seed,
                            augment=augment)

    def collate(self, samples: Sequence[dict]) -> tuple[list[torch.Tensor], list[dict]]:
        """-> (images: list of (3, H, W) float, targets: list of {"boxes", "labels", "image_id"})."""
        return ([s["image"] for s in samples],
                [{"boxes": s["boxes"], "labels": s["labels"], "image_id": s["image_id"]} for s in samples])

    def batch_size_of(self, batch: Any) -> int:
        return len(batch[0])

    def to_device(self, batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
        images, targets = batch
        return ([im.to(device, non_blocking=True) for im in images],
                [{**t, "boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets])

    # -- training and evaluation ----------------------------------------------------------
    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **{k: v.detach() for k, v in losses.items()}}

    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device, classes: list[str],
                 amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
        return evaluate_detector(model, loader, device=device, classes=classes, amp_dtype=amp_dtype)

    def write_artifacts(self, out_dir: Any, *, metrics: dict[str, Any], classes: list[str]) -> None:
        """`predictions.json` (COCO results, the dataset's own ids) when the metrics carry them."""
        if "_predictions" in metrics:
            from vision_transfer.files import write_json

            write_json(Path(out_dir) / "predictions.json", metrics["_predictions"])

    def export_spec(self, model: nn.Module, **kwargs: Any):
        """`vt export`: one image in, boxes / scores / labels after NMS out (see export.py)."""
        from .export import detection_export_spec

        return detection_export_spec(model, **kwargs)

    def predict_batch(self, model: nn.Module, images: list[Any], *, meta: dict, device: torch.device,
                      score_threshold: float = 0.5, **_: Any) -> list[dict]:
        """Per image: `{"width", "height", "detections": [{"label", "class_index", "score",
        "box": [x1, y1, x2, y2]}]}` in the image's own pixels (the detector resizes internally)."""
        outs = model([torch.from_numpy(a).permute(2, 0, 1).float().div(255).to(device) for a in images])
        return [{"width": int(a.shape[1]), "height": int(a.shape[0]),
                 "detections": _detections(out, meta["classes"], score_threshold)} for a, out in zip(images, outs)]

    def draw(self, image: Any, result: dict, *, out_dir: Any, stem: str, meta: dict) -> dict:
        draw_detections(image, result["detections"], Path(out_dir) / f"{stem}.png")
        return {"drawing": f"{stem}.png"}


def _detections(out: dict, classes: list[str], threshold: float) -> list[dict]:
    keep = out["scores"] >= threshold
    return [{"label": classes[int(lab)], "class_index": int(lab), "score": round(float(s), 4),
             "box": [round(float(v), 1) for v in box]}
            for box, lab, s in zip(out["boxes"][keep].cpu(), out["labels"][keep].cpu(), out["scores"][keep].cpu())]


def _pretrained(backbone: Backbone) -> bool:
    return str(backbone.weights or "none").lower() not in ("none", "null", "")


def _resolve_head(head: Any) -> tuple[Callable, bool]:
    if isinstance(head, str):
        return HEADS.get(head), HEADS.meta(head).get("background", True)
    if isinstance(head, nn.Module):
        raise VTError("a detection head is a builder f(spec: DetectorInputs) -> detector (or a registered name), "
                      "not a module: it needs the backbone to build on")
    if callable(head):
        return head, getattr(head, "background", True)
    raise VTError(f"model.head={head!r} is not a detection head; valid: {', '.join(HEADS.list())}")


__all__ = ["Detection", "Detector", "DetectorInputs", "DetectionDataset", "FeaturePyramid", "HEADS",
           "coco_results", "register_detection_head"]
