"""Target-domain data: the unlabelled images (`adapt.target.images`, searched recursively, class
folders ignored), an endless seeded loader over them, and the labelled target split
(`adapt.target.val`) read by the task's own reader.

A target sample is `{"image": (3, S, S) float normalised with the backbone's mean/std}`: what
the backbone sees at the task's image size.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import albumentations as A
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..backbones.base import Preprocessing
from ..data.dataset import ImageDataset, albumentations_transform, check_images, warn_skipped
from ..data.image import IMAGE_SUFFIXES, list_images
from ..data.transforms import INTERPOLATION, normalise
from ..errors import VTError


def target_paths(root: str | Path | None, *, key: str = "adapt.target.images") -> list[Path]:
    """The readable images below `root`; one-line errors for a missing, empty or image-less folder."""
    if not root:
        raise VTError(f"{key} is not set: give {key}=DIR, a folder of unlabelled target-domain images")
    p = Path(root)
    if not p.is_dir():
        raise VTError(f"{key}={root}: no such folder (a folder of unlabelled target-domain images)")
    if not any(p.iterdir()):
        raise VTError(f"{key}={root}: the folder is empty; put the target-domain images there")
    paths = list_images(p)
    if not paths:
        raise VTError(f"{key}={root}: no images below it ({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
    good, bad = check_images(paths)
    warn_skipped(bad, "target images")
    if not good:
        raise VTError(f"{key}={root}: none of its {len(paths)} image files can be read")
    return [paths[i] for i in good]


def target_transform(*, image_size: int, preprocessing: Preprocessing, augment: bool) -> A.Compose:
    """Square resize (+ flips when training) and the backbone's normalisation."""
    interp = INTERPOLATION.get(preprocessing.interpolation, INTERPOLATION["bilinear"])
    ops: list = [A.Resize(image_size, image_size, interpolation=interp)]
    ops += [A.HorizontalFlip(p=0.5)] if augment else []
    return A.Compose(ops + normalise(preprocessing))


def target_dataset(paths: list[Path], *, image_size: int, preprocessing: Preprocessing, augment: bool,
                   seed: int) -> ImageDataset:
    t = target_transform(image_size=image_size, preprocessing=preprocessing, augment=augment)
    return ImageDataset(paths, [{} for _ in paths], transform=albumentations_transform(t), seed=seed)


def _images_only(samples: list[dict]) -> torch.Tensor:
    return torch.stack([s["image"] for s in samples])


class EndlessLoader:
    """Batches `(B, 3, S, S)` of target images forever: a seeded shuffle per pass, this rank's
    shard under DDP (so two processes see the same global target batches as one)."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0) -> None:
        self.dataset = dataset
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 collate_fn=_images_only, persistent_workers=num_workers > 0,
                                 # endless, so a short last batch buys nothing (and one image breaks BatchNorm)
                                 drop_last=len(self.sampler) >= batch_size)
        self.passes = 0
        self._it: Iterator | None = None

    def next(self) -> torch.Tensor:
        while True:
            if self._it is None:
                self.sampler.set_epoch(self.passes)
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(self.passes)
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it, self.passes = None, self.passes + 1


def target_val_split(task: Any, *, data: Any, val: Any, classes: list[str], image_size: int,
                     preprocessing: Preprocessing, seed: int) -> Dataset | None:
    """The labelled target split in the task's layout, read by the task's own reader: the split's
    paths are given as both train and val of a copy of the data config (no hold-out split)."""
    if val is None or (not isinstance(val, str) and not val.images):
        return None
    split = {"images": val} if isinstance(val, str) else val.model_dump()
    if not Path(split["images"]).is_dir():
        raise VTError(f"adapt.target.val: {split['images']} is not a folder (a labelled target split in the "
                      f"task's layout: for classification one sub-folder per class)")
    d = data.model_copy(update={"root": None, "train": type(data.train)(**split), "val": type(data.val)(**split),
                                "val_split": 0.0, "classes": list(classes), "max_per_class": None})
    splits = task.build_datasets(data=d, image_size=image_size, preprocessing=preprocessing, seed=seed,
                                 augment=False)
    if list(splits.classes) != list(classes):
        raise VTError(f"adapt.target.val has classes {splits.classes}; the source data has {classes}")
    return splits.val if splits.val is not None else splits.train
