"""Segmentation data: mask folders or COCO JSON -> samples `{"image", "mask"}`, augmentation, collate.

Sources (`data.format`, inferred from the keys given when absent):
- `masks`: `data.train.images` + `data.train.masks` folders (see `vision_transfer.data.masks`);
  classes from `data.classes` (index order), else `class_0..class_K` from the largest value.
- `coco`: `data.train.annotations` (COCO JSON) + `data.train.images` (their root); classes are
  `background` + the file's categories (`data.classes` may list them, with or without
  "background" first); polygons and RLE become semantic masks, crowd regions 255.

Every mask is checked when the dataset is built: values outside the class list are a one-line
error; a mask whose size differs from its image, an image without a mask and an object without
a usable segmentation are skipped and counted in `DataSplits.info`.

Train: resize to `image_size` squared, horizontal and vertical flips (`data.rotate90`: 90-degree
turns too; `data.color_jitter`: brightness/contrast/saturation jitter); masks follow with
nearest-neighbour interpolation. Val: the image is resized to `image_size` squared; the mask
keeps its own size, and predictions are resized to it, so metrics are those of `vt predict`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vision_transfer.backbones.base import Preprocessing
from vision_transfer import report
from vision_transfer.data.dataset import EpochSeeded
from vision_transfer.data.image import BadImage, probe_image, read_image
from vision_transfer.data.masks import check_mask_values, coco_semantic_mask, pair_masks, palette_lookup, read_mask
from vision_transfer.data.transforms import INTERPOLATION, colour_jitter, normalise
from vision_transfer.data.split import hold_out
from vision_transfer.errors import VTError
from vision_transfer.task import DataSplits


def train_transforms(*, image_size: int, preprocessing: Preprocessing, augment: bool = True,
                     rotate90: bool = False, color_jitter: float = 0.0) -> A.Compose:
    interp = INTERPOLATION.get(preprocessing.interpolation, cv2.INTER_LINEAR)
    if not augment:
        return eval_transforms(image_size=image_size, preprocessing=preprocessing)
    # no random scaling: on a dozen tiles at one magnification a random-resized crop (scale 0.5-1)
    # gave mIoU 0.957 against 0.961 without (benchmarks/segmentation_vs_smp.py); flips keep sizes
    # no colour jitter by default: on the same tiles jitter 0.2 gave mIoU 0.981 against 0.983 without
    # (three seeds each, constant lr); data.color_jitter turns it on for stain or lighting shifts
    ops = [A.Resize(image_size, image_size, interpolation=interp, mask_interpolation=cv2.INTER_NEAREST),
           A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    ops += [A.RandomRotate90(p=0.5)] if rotate90 else []
    ops += colour_jitter(color_jitter)
    return A.Compose(ops + normalise(preprocessing))


def eval_transforms(*, image_size: int, preprocessing: Preprocessing) -> A.Compose:
    """Resize to `image_size` x `image_size` and normalise (what `vt predict` does too)."""
    interp = INTERPOLATION.get(preprocessing.interpolation, cv2.INTER_LINEAR)
    return A.Compose([A.Resize(image_size, image_size, interpolation=interp,
                               mask_interpolation=cv2.INTER_NEAREST)] + normalise(preprocessing))


class SegmentationDataset(EpochSeeded, Dataset):
    """`items[i] = (image path, mask source)`; `mask_of(source, (h, w)) -> (H, W) int64`.

    Train samples: `{"image": (3, S, S) float, "mask": (S, S) int64}`; val samples keep the mask
    at its own size. Augmentation is seeded per (seed, epoch, index)."""

    def __init__(self, items: Sequence[tuple[Path, Any]], mask_of, *, transform: A.Compose, train: bool,
                 seed: int = 0) -> None:
        self.items, self.mask_of, self.transform = list(items), mask_of, transform
        self.train = train
        self._init_seeding(seed)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        path, source = self.items[i]
        image = read_image(path)
        return image, self.mask_of(source, image.shape[:2])

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, mask = self.load(i)
        self.transform.set_random_seed(self.sample_seed(i))
        if self.train:
            out = self.transform(image=image, mask=mask.astype(np.uint8))
            return {"image": out["image"], "mask": torch.as_tensor(np.asarray(out["mask"]), dtype=torch.int64),
                    "index": i}
        return {"image": self.transform(image=image)["image"], "mask": torch.from_numpy(mask), "index": i}


def collate(samples: Sequence[dict]) -> dict[str, Any]:
    """`{"image": (N, 3, S, S), "mask": (N, H, W) int64, or a list when sizes differ, "index"}`."""
    masks = [s["mask"] for s in samples]
    same = all(m.shape == masks[0].shape for m in masks)
    return {"image": torch.stack([s["image"] for s in samples]),
            "mask": torch.stack(masks) if same else masks,
            "index": torch.tensor([s["index"] for s in samples])}


# -- sources ----------------------------------------------------------------------------------

def resolve_format(data: Any) -> str:
    fmt = data.format
    if fmt is None:
        fmt = "coco" if data.train.annotations else "masks"
    if fmt not in ("masks", "coco"):
        raise VTError(f"data.format={fmt} is not a segmentation format; use masks (images/ + masks/ folders) or coco")
    split = data.train
    need = ("images", "masks") if fmt == "masks" else ("images", "annotations")
    for k in need:
        if not getattr(split, k):
            raise VTError(f"data.format={fmt} needs data.train.{k} (and data.val.{k}, or data.val_split)")
    return fmt


def mask_folder_split(images: str, masks: str, *, classes: Sequence[str], palette: Any,
                      info: Counter) -> tuple[list[tuple[Path, Path]], Any]:
    """Checked `(image, mask)` pairs of one split, and the mask loader for the dataset."""
    pairs, counts = pair_masks(images, masks)
    info.update(counts)
    colours = palette_lookup(palette, classes) if palette is not None else None
    kept = []
    for img, m in pairs:
        try:
            w, h = probe_image(img)
            mask = read_mask(m, num_classes=len(classes), colours=colours)
        except BadImage as e:   # the image or its mask file: counted, listed in skipped.json
            info["unreadable_images"] += 1
            report.skip(img, e.reason, str(e))
            continue
        if mask.shape != (h, w):
            info["mask_size_mismatch"] += 1
            report.skip(img, "mask-size-mismatch", f"its mask {m} is {mask.shape[1]}x{mask.shape[0]}, the image {w}x{h}")
            continue
        kept.append((img, m))
    if not kept:
        raise VTError(f"no usable image/mask pair in {images} and {masks} (every mask's size differs from its image)")

    def mask_of(path: Path, hw: tuple[int, int]) -> np.ndarray:
        return read_mask(path, num_classes=len(classes), colours=colours)

    return kept, mask_of


def infer_mask_classes(masks_dir: str) -> list[str]:
    """`class_0..class_K` up to the largest value (not 255) found in the masks."""
    from vision_transfer.data.image import list_images

    top = 0
    only_0_255 = True
    for p in list_images(masks_dir):
        try:
            m = read_mask(p, num_classes=256)
        except BadImage:
            continue   # counted when the split is read
        only_0_255 &= bool(np.isin(m, (0, 255)).all())
        vals = m[m != 255]
        top = max(top, int(vals.max()) if vals.size else 0)
    if top == 0 and only_0_255:
        raise VTError(f"every mask in {masks_dir} holds only 0 and 255, and 255 means 'ignore': save the object as 1 "
                      "(class indices 0..K-1), or give data.classes and data.palette for colour masks")
    return [f"class_{i}" for i in range(top + 1)]


def coco_classes(annotations: str, images: str, classes: Sequence[str] | None) -> list[str]:
    from vision_transfer.data.coco import read_coco

    names = [c for c in classes if c != "background"] if classes else None
    return ["background", *read_coco(annotations, images, classes=names, check_images=False).classes]


def coco_split(annotations: str, images: str, *, classes: Sequence[str], info: Counter) -> tuple[list, Any]:
    """`[(image path, mask)]` with masks rasterised once (COCO masks are cheap to hold as uint8)."""
    from vision_transfer.data.coco import read_coco

    data = read_coco(annotations, images, classes=list(classes[1:]))
    info.update(data.info)
    items = []
    for im in data.images:
        mask, skipped = coco_semantic_mask(data.annotations[im.id], height=im.height, width=im.width)
        info["annotations_without_segmentation"] += skipped
        check_mask_values(mask, num_classes=len(classes), where=f"{annotations} image {im.id}")
        items.append((im.path, mask.astype(np.uint8)))
    if not items:
        raise VTError(f"{annotations} has no image whose file exists below {images}")
    return items, lambda mask, hw: mask.astype(np.int64)


def build_splits(*, data: Any, image_size: int, preprocessing: Preprocessing, seed: int,
                 augment: bool = True) -> DataSplits:
    fmt = resolve_format(data)
    info: Counter = Counter()
    if fmt == "masks":
        classes = list(data.classes) if data.classes else infer_mask_classes(data.train.masks)

        def load(split):
            return mask_folder_split(split.images, split.masks, classes=classes, palette=data.palette, info=info)
        has_val = bool(data.val.images and data.val.masks)
    else:
        classes = coco_classes(data.train.annotations, data.train.images, data.classes)

        def load(split):
            return coco_split(split.annotations, split.images, classes=classes, info=info)
        has_val = bool(data.val.images and data.val.annotations)
    if len(classes) < 2:
        raise VTError(f"segmentation needs at least two classes (e.g. background and an object), got {classes}")
    train_items, mask_of = load(data.train)
    if has_val:
        val_items, val_mask_of = load(data.val)
    elif data.val_split > 0 and len(train_items) > 1:
        train_idx, val_idx = hold_out(len(train_items), fraction=data.val_split, seed=data.split_seed)
        val_items, train_items = [train_items[i] for i in val_idx], [train_items[i] for i in train_idx]
        val_mask_of = mask_of
    else:
        val_items = []
    tt = train_transforms(image_size=image_size, preprocessing=preprocessing, augment=augment,
                          rotate90=data.rotate90, color_jitter=data.color_jitter)
    train = SegmentationDataset(train_items, mask_of, transform=tt, train=True, seed=seed)
    val = SegmentationDataset(val_items, val_mask_of, transform=eval_transforms(
        image_size=image_size, preprocessing=preprocessing), train=False, seed=seed) if val_items else None
    return DataSplits(train=train, val=val, classes=classes, info={k: int(v) for k, v in info.items() if v})
