"""Unlabelled images and their augmented views for self-supervised pretraining.

A sample is `{"views": [V tensors (3, H, W)], "index": int}`; each view is an independent draw of
one albumentations pipeline (random-resized crop, flips, colour jitter, grey, blur), seeded per
(seed, epoch, index, view) through `EpochSeeded`, so a resumed run sees the views of an
uninterrupted one with any number of loader workers.

Defaults are sized for small grey industrial and microscopy images as well as photos: crops keep
at least a quarter of the area (SimCLR's 8 % loses a crack or a nucleus at 64-96 px), vertical
flips on (no "up" in a cell or a tile), blur relative to the view size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import albumentations as A

from ..backbones.base import Preprocessing
from ..data.dataset import ImageDataset, check_images
from ..data.folders import read_image_folder
from ..data.image import IMAGE_SUFFIXES, list_images
from ..data.transforms import _interp, embedding_transforms, normalise
from ..errors import VTError


def view_transform(*, image_size: int, preprocessing: Preprocessing, crop_scale: float = 0.25,
                   hflip: bool = True, vflip: bool = True, rotate90: bool = False, color_jitter: float = 0.4,
                   hue: float = 0.05, grey: float = 0.2, blur: float = 0.5, blur_sigma: float = 1.5) -> A.Compose:
    """One view: `image=HxWx3 uint8` -> `(3, image_size, image_size)` float tensor, normalised with
    the backbone's constants. Each strength 0 switches its op off."""
    ops: list[A.BasicTransform] = [A.RandomResizedCrop(size=(image_size, image_size), scale=(crop_scale, 1.0),
                                                       interpolation=_interp(preprocessing))]
    ops += [A.HorizontalFlip(p=0.5)] if hflip else []
    ops += [A.VerticalFlip(p=0.5)] if vflip else []
    ops += [A.RandomRotate90(p=0.5)] if rotate90 else []
    if color_jitter > 0 or hue > 0:
        ops.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                 hue=hue, p=0.8))
    ops += [A.ToGray(p=grey)] if grey > 0 else []
    if blur > 0:
        ops.append(A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, blur_sigma), p=blur))
    return A.Compose(ops + normalise(preprocessing))


class MultiView:
    """Sample transform: `views` independent draws of `compose` (picklable for loader workers)."""

    def __init__(self, compose: A.Compose, views: int) -> None:
        self.compose, self.views = compose, views

    def __call__(self, sample: dict, seed: int) -> dict[str, Any]:
        out = []
        for v in range(self.views):
            self.compose.set_random_seed(seed * 7 + v)
            out.append(self.compose(image=sample["image"])["image"])
        return {"views": out, "index": sample["index"]}


class EvalView:
    """Sample transform for monitoring: the eval preset, and the label (-1 when unlabelled)."""

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose

    def __call__(self, sample: dict, seed: int) -> dict[str, Any]:
        return {"image": self.compose(image=sample["image"])["image"], "label": sample.get("label", -1)}


def find_unlabelled_images(root: str | os.PathLike) -> list[Path]:
    """Every readable image below `root` (recursive, labels ignored); one-line errors for an
    absent or empty folder and for a folder of files none of which is an image."""
    root = Path(root)
    if not root.exists():
        raise VTError(f"image folder {root} does not exist: give a folder of images (any depth of subfolders)")
    if root.is_file():
        raise VTError(f"{root} is a file: vt pretrain takes a folder of images")
    paths = list_images(root)
    if not paths:
        raise VTError(f"no images below {root} ({', '.join(IMAGE_SUFFIXES[:6])}, ...): pretraining needs a "
                      "folder of unlabelled images")
    good, bad = check_images(paths)
    if not good:
        raise VTError(f"none of the {len(paths)} image files below {root} can be read (first: {bad[0]})")
    if bad:
        from ..engine.logging import console

        console.print(f"[yellow]skipping {len(bad)} unreadable files (first: {bad[0]})[/yellow]")
    return [paths[i] for i in good]


def image_root(data: Any, image_dir: str | None) -> str:
    """The folder to pretrain on: IMAGE_DIR, else `data.train.images`, else `data.root`."""
    root = image_dir or data.train.images or data.root
    if not root:
        raise VTError("vt pretrain needs images: vt pretrain IMAGE_DIR, or data.train.images=DIR / data.root=DIR")
    return str(root)


def monitor_dataset(*, paths: list[Path], knn_val: str | None, limit: int, image_size: int,
                    preprocessing: Preprocessing, seed: int) -> tuple[ImageDataset, list[str]]:
    """Images embedded at each epoch's end: the labelled `knn_val` folder (class subfolders), or
    an evenly spaced subset of at most `limit` training images (no labels)."""
    compose = EvalView(embedding_transforms(image_size=image_size, preprocessing=preprocessing))
    if knn_val:
        items = read_image_folder(knn_val)
        if len(items.classes) < 2:
            raise VTError(f"pretrain.knn_val={knn_val} needs at least two class folders")
        return ImageDataset(items.paths, [{"label": y} for y in items.labels], transform=compose,
                            seed=seed), items.classes
    step = max(1, len(paths) // limit)
    subset = paths[::step][:limit]
    return ImageDataset(subset, [{} for _ in subset], transform=compose, seed=seed), []
