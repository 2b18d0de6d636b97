"""Seeded subsets of a train split for data-size studies, for any task: "k images per class"
(stratified; for multi-label images such as detection scenes or segmentation masks, greedy
k-shot sampling, rarest class first) or a fraction of the images.

A task plugin (or the API, after `Task.build_datasets`) calls

    splits.train = subsample_train(splits.train, per_class=data.max_per_class, seed=seed)

Classification already subsamples its image list (`per_class_subset`) before building datasets,
so that the feature cache keys on the exact images; on such a dataset this function changes
nothing (every class already has at most k images) and returns it as it is.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import VTError
from ..task import IGNORE_INDEX


class TrainSubset(Subset):
    """`Subset` that still forwards `set_epoch` (seeded augmentation) and the parent's attributes."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "indices") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def image_classes(dataset: Dataset) -> list[set[int]]:
    """The classes present in each image, read from targets where the dataset keeps them
    (`targets[i]["label"]`, a class or a multi-hot vector, or `["labels"]`), else from masks (`dataset.load(i) -> (image, mask)`)."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        out = []
        for t in targets:
            if "label" in t and np.ndim(t["label"]) == 0:
                out.append({int(t["label"])})
            elif "label" in t:   # multi-hot (multi-label classification)
                out.append({int(v) for v in np.flatnonzero(np.asarray(t["label"]))})
            else:
                out.append({int(v) for v in np.asarray(t["labels"]).reshape(-1)})
        return out
    if hasattr(dataset, "load"):
        return [{int(v) for v in np.unique(dataset.load(i)[1])} - {IGNORE_INDEX} for i in range(len(dataset))]
    raise VTError(f"cannot tell the classes of {type(dataset).__name__}'s images: it has neither `targets` "
                  "nor `load(i) -> (image, mask)`; subsample with data.max_per_class is not available for it")


def per_class_indices(classes_of: list[set[int]], *, per_class: int, seed: int) -> list[int]:
    """Indices of a subset with at least `per_class` images for every class that has that many
    (all of its images otherwise), at most `per_class` x number of classes images. Classes are
    served rarest first; images in a seeded random order; an image counts for every class in it."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(classes_of)).tolist()
    frequency: dict[int, int] = {}
    for cs in classes_of:
        for c in cs:
            frequency[c] = frequency.get(c, 0) + 1
    count = dict.fromkeys(frequency, 0)
    chosen: set[int] = set()
    for c in sorted(frequency, key=lambda c: (frequency[c], c)):
        for i in order:
            if count[c] >= per_class:
                break
            if c in classes_of[i] and i not in chosen:
                chosen.add(i)
                for other in classes_of[i]:
                    count[other] += 1
    return sorted(chosen)


def subsample_train(dataset: Dataset, *, per_class: int | None = None, fraction: float | None = None,
                    seed: int = 0) -> Dataset:
    """`dataset` limited to `per_class` images per class and/or a seeded `fraction` of its images;
    the dataset itself when nothing would be dropped."""
    indices = list(range(len(dataset)))
    if per_class:
        indices = per_class_indices(image_classes(dataset), per_class=per_class, seed=seed)
    if fraction is not None and fraction < 1.0:
        rng = np.random.default_rng(seed + 1)
        keep = max(1, round(len(indices) * fraction))
        indices = sorted(rng.permutation(indices)[:keep].tolist())
    if len(indices) == len(dataset):
        return dataset
    return TrainSubset(dataset, indices)
