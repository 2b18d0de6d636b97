"""Albumentations presets for detection: boxes move with the image and are clipped to it.

Train: shrink so the longer side is at most `image_size` (the detector resizes to exactly that
anyway, so this only saves work), horizontal flip, a mild random scale / shift, brightness and
contrast. Boxes that become thinner than one pixel, or keep less than 30 % of their area, are
dropped (`BboxParams(min_visibility=0.3, min_width=1, min_height=1)`). Val / predict: no
geometric change, so predictions come back in the image's own pixels (the detector's own
transform resizes and maps boxes back).

Output: `{"image": (3, H, W) float32 in [0, 1], "boxes": (N, 4) float32 xyxy, "labels": (N,) int64}`;
normalisation with the backbone's mean / std happens inside the detector (`image_mean`, `image_std`).
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch

from vision_transfer.backbones.base import Preprocessing
from vision_transfer.data.transforms import INTERPOLATION


def detection_compose(split: str, *, image_size: int, preprocessing: Preprocessing, augment: bool = True,
                      color_jitter: float = 0.0) -> A.Compose:
    """`color_jitter`: brightness/contrast limit on 30 % of the train images (0: off; the task's
    default, 0.15, comes from `Detection.default_color_jitter`)."""
    jitter = color_jitter or 0.0   # unset (a config read without resolve_defaults): off
    interp = INTERPOLATION.get(preprocessing.interpolation, cv2.INTER_LINEAR)
    ops: list = []
    if split == "train" and augment:
        ops = [A.LongestMaxSize(max_size=image_size, interpolation=interp),
               A.HorizontalFlip(p=0.5),
               A.Affine(scale=(0.85, 1.15), translate_percent=(-0.05, 0.05), interpolation=interp,
                        border_mode=cv2.BORDER_CONSTANT, p=0.5),
               *([A.RandomBrightnessContrast(brightness_limit=jitter, contrast_limit=jitter, p=0.3)]
                 if jitter > 0 else [])]
    elif split == "train":
        ops = [A.LongestMaxSize(max_size=image_size, interpolation=interp)]
    if not ops:   # nothing moves boxes (and albumentations warns about an idle bbox processor)
        return A.Compose([A.ToFloat(max_value=255.0), A.ToTensorV2()])
    return A.Compose(ops + [A.ToFloat(max_value=255.0), A.ToTensorV2()],
                     bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3,
                                              min_width=1.0, min_height=1.0, clip=True))


class DetectionTransform:
    """A seeded sample transform for `ImageDataset`: `(sample, seed) -> sample` (picklable)."""

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose

    def __call__(self, sample: dict, seed: int) -> dict:
        self.compose.set_random_seed(seed)
        boxes = np.asarray(sample["boxes"], np.float32).reshape(-1, 4)
        labels = np.asarray(sample["labels"], np.int64)
        if "bboxes" in self.compose.processors:
            out = self.compose(image=sample["image"], bboxes=boxes, labels=labels)
        else:
            out = {"image": self.compose(image=sample["image"])["image"], "bboxes": boxes, "labels": labels}
        boxes = torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4))
        labels = torch.as_tensor(np.asarray(out["labels"]).astype(np.int64).reshape(-1))
        return {"image": out["image"], "boxes": boxes, "labels": labels, "image_id": int(sample["image_id"]),
                "index": sample.get("index", -1)}
