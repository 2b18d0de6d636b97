"""Detection data: COCO / VOC / YOLO on disk -> `CocoData` -> a seeded, augmenting dataset.

Every format is read into `vision_transfer.data.coco.CocoData` (images, categories with the
file's ids, per-image boxes), so evaluation always speaks COCO with the dataset's own image and
category ids. A sample is `{"image": (3, H, W) float in [0, 1], "boxes": (N, 4) float32 xyxy
pixels, "labels": (N,) int64 from 0, "image_id": int}`; crowd / VOC-difficult regions are left
out of training targets but stay in the evaluation ground truth.
"""
from __future__ import annotations

from typing import Any


from vision_transfer.backbones.base import Preprocessing
from vision_transfer.data.coco import CocoData, read_coco
from vision_transfer.data.dataset import ImageDataset
from vision_transfer.data.split import hold_out
from vision_transfer.errors import VTError
from vision_transfer.task import DataSplits

from .transforms import DetectionTransform, detection_compose

FORMATS = ("coco", "voc", "yolo")


class DetectionDataset(ImageDataset):
    """`ImageDataset` over a `CocoData`; `coco` gives the evaluation ground truth and id maps."""

    def __init__(self, coco: CocoData, *, transform: Any, seed: int = 0) -> None:
        targets = []
        for im in coco.images:
            boxes, labels = coco.boxes(im.id)
            targets.append({"boxes": boxes, "labels": labels, "image_id": im.id})
        super().__init__([im.path for im in coco.images], targets, transform=transform, seed=seed)
        self.coco = coco


def read_split(data: Any, split: str, classes: list[str] | None) -> CocoData | None:
    """The `CocoData` of `data.train` or `data.val` (None when that split is not given)."""
    s = getattr(data, split)
    if not s.images and not s.annotations:
        return None
    fmt = data.format or _guess_format(s.annotations)
    if fmt not in FORMATS:
        raise VTError(f"data.format={fmt!r} is not a detection format; valid: {', '.join(FORMATS)}")
    if not s.images or not s.annotations:
        missing = "images" if not s.images else "annotations"
        raise VTError(f"data.{split}.{missing} is missing: detection needs both data.{split}.images (a folder) and "
                      f"data.{split}.annotations ({'a COCO JSON file' if fmt == 'coco' else 'a folder'})")
    if fmt == "coco":
        return read_coco(s.annotations, s.images, classes=classes)
    if fmt == "voc":
        from vision_transfer.data.voc import read_voc

        return read_voc(s.images, s.annotations, classes=classes)
    from vision_transfer.data.yolo import read_yolo

    return read_yolo(s.images, s.annotations, classes=classes)


def _guess_format(annotations: str | None) -> str:
    if annotations and str(annotations).lower().endswith(".json"):
        return "coco"
    raise VTError("set data.format (coco, voc or yolo) for detection data")


def build_splits(*, data: Any, image_size: int, preprocessing: Preprocessing, seed: int,
                 augment: bool = True) -> DataSplits:
    """Train and val datasets; without `data.val.*` a seeded `data.val_split` fraction of the
    train images is held out. `info` counts what the readers dropped or fixed."""
    train = read_split(data, "train", data.classes)
    if train is None:
        raise VTError("no training data: give data.train.images and data.train.annotations (and data.format)")
    val = read_split(data, "val", data.classes or train.classes)   # same labels as train, or a VTError
    info = {f"train_{k}": v for k, v in train.info.items()}
    if val is None and data.val_split > 0:
        train, val = _hold_out(train, data.val_split, data.split_seed)
    elif val is not None:
        info.update({f"val_{k}": v for k, v in val.info.items()})
    if not train.images:
        raise VTError("no usable training images (all missing or unreadable); check data.train.images")
    make = lambda split: DetectionTransform(detection_compose(split, image_size=image_size,  # noqa: E731
                                                              preprocessing=preprocessing, augment=augment,
                                                              color_jitter=data.color_jitter))
    return DataSplits(train=DetectionDataset(train, transform=make("train"), seed=seed),
                      val=DetectionDataset(val, transform=make("val"), seed=seed) if val and val.images else None,
                      classes=train.classes, info=info)


def _hold_out(coco: CocoData, fraction: float, seed: int) -> tuple[CocoData, CocoData | None]:
    ids = [im.id for im in coco.images]
    train_idx, val_idx = hold_out(len(ids), fraction=fraction, seed=seed)
    if not val_idx:
        return coco, None
    return coco.subset({ids[i] for i in train_idx}), coco.subset({ids[i] for i in val_idx})
