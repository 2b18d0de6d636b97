"""Albumentations presets per task and split, normalised with the backbone's own constants.

Classification: train = random-resized crop, horizontal flip, light colour jitter; val = resize
the shorter side to `size / crop_pct`, centre crop `size`. Detection and segmentation presets move
boxes and masks with the image (masks with nearest-neighbour interpolation).
"""
from __future__ import annotations

import albumentations as A
import cv2

from ..backbones.base import Preprocessing

INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                 "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def _interp(pre: Preprocessing) -> int:
    return INTERPOLATION.get(pre.interpolation, cv2.INTER_LINEAR)


def normalise(pre: Preprocessing) -> list[A.BasicTransform]:
    return [A.Normalize(mean=pre.mean, std=pre.std, max_pixel_value=255.0), A.ToTensorV2()]


def classification_transforms(split: str, *, image_size: int, preprocessing: Preprocessing,
                              augment: bool = True, crop_scale: float = 0.35, vflip: bool = False,
                              rotate90: bool = False, color_jitter: float = 0.0) -> A.Compose:
    """`split` is "train" or "val"; returns a Compose mapping `image=HxWx3 uint8` to a CHW float tensor.

    Train: a random-resized crop keeping `crop_scale`..1 of the area, horizontal flips (and
    vertical flips, 90-degree turns for images without an up, such as cells or wafers), light
    colour jitter of strength `color_jitter` on half the images (0: none)."""
    interp = _interp(preprocessing)
    if split == "train" and augment:
        ops = [A.RandomResizedCrop(size=(image_size, image_size), scale=(crop_scale, 1.0), interpolation=interp),
               A.HorizontalFlip(p=0.5)]
        ops += [A.VerticalFlip(p=0.5)] if vflip else []
        ops += [A.RandomRotate90(p=0.5)] if rotate90 else []
        ops += colour_jitter(color_jitter)
    else:
        ops = eval_resize(image_size=image_size, preprocessing=preprocessing)
    return A.Compose(ops + normalise(preprocessing))


def colour_jitter(strength: float, *, saturation: bool = True) -> list[A.BasicTransform]:
    """Brightness, contrast (and saturation) scaled by up to 1 +/- `strength`, on half the images."""
    if not strength or strength <= 0:
        return []
    return [A.ColorJitter(brightness=strength, contrast=strength, saturation=strength if saturation else 0.0,
                          hue=0.0, p=0.5)]


def eval_resize(*, image_size: int, preprocessing: Preprocessing) -> list[A.BasicTransform]:
    """Resize the shorter side to `image_size / crop_pct`, then centre-crop `image_size` (timm's eval)."""
    resize = max(image_size, round(image_size / max(preprocessing.crop_pct, 1e-3)))
    return [A.SmallestMaxSize(max_size=resize, interpolation=_interp(preprocessing)),
            A.CenterCrop(height=image_size, width=image_size)]


def embedding_transforms(*, image_size: int, preprocessing: Preprocessing) -> A.Compose:
    """The eval preset, for feature extraction (similarity search, cached linear probes)."""
    return A.Compose(eval_resize(image_size=image_size, preprocessing=preprocessing) + normalise(preprocessing))
