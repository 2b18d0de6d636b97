"""Class counts of a training split, and resampling for imbalanced data.

`data.sampler=balanced` wraps the training dataset in `ResampledDataset`: each epoch it draws
`len(dataset)` indices with replacement, with probabilities from per-sample weights:
- classification: `1 / count(label)`, so every class is drawn equally often on average;
- detection: repeat-factor sampling (Gupta et al. 2019, LVIS; Detectron2's
  `RepeatFactorTrainingSampler`): `r_i = max over the image's classes of max(1, sqrt(t / f_c))`,
  `f_c` the fraction of images holding class c, `t = REPEAT_THRESHOLD`. Detectron2 repeats image i
  `r_i` times (a longer epoch); here the epoch keeps its length and images are drawn in
  proportion to `r_i`, so schedules and epoch counts mean the same with and without it;
- segmentation: the sample weight is the largest inverse pixel frequency among the classes
  present in its mask.
The draw is seeded by (seed, epoch), so a resumed run sees the same epochs. The engine's
DistributedSampler then shuffles and shards the drawn positions as usual.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import VTError

REPEAT_THRESHOLD = 0.1   # LVIS's t: classes on fewer than 10 % of the images are repeated


def sample_labels(dataset: Dataset) -> list[list[int]] | None:
    """The class indices present in each sample, read from the targets without decoding images;
    None when the dataset's layout is unknown."""
    if hasattr(dataset, "labels") and isinstance(getattr(dataset, "labels"), torch.Tensor):   # cached features
        return [[int(x)] for x in dataset.labels]
    targets = getattr(dataset, "targets", None)
    if targets is not None and targets and "label" in targets[0]:
        return [[int(t["label"])] for t in targets]
    if targets is not None and targets and "labels" in targets[0]:
        return [sorted({int(x) for x in np.asarray(t["labels"]).reshape(-1)}) for t in targets]
    return None


def mask_pixel_counts(dataset: Dataset, num_classes: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Segmentation: `(pixels per class over the split, per-sample pixel counts)`; 255 is skipped."""
    total = np.zeros(num_classes, dtype=np.int64)
    per_sample = []
    for i in range(len(dataset)):
        _, mask = dataset.load(i)
        m = np.asarray(mask).reshape(-1)
        c = np.bincount(m[m < num_classes], minlength=num_classes)[:num_classes]
        total += c
        per_sample.append(c)
    return total, per_sample


def class_counts(dataset: Dataset, num_classes: int) -> list[int]:
    """Samples per class (classification), images per class (detection) or pixels (segmentation)."""
    labels = sample_labels(dataset)
    if labels is not None:
        counts = np.zeros(num_classes, dtype=np.int64)
        for ls in labels:
            for c in ls:
                counts[c] += 1
        return counts.tolist()
    if hasattr(dataset, "load") and hasattr(dataset, "mask_of"):
        return mask_pixel_counts(dataset, num_classes)[0].tolist()
    raise VTError(f"cannot count the classes of a {type(dataset).__name__}: give train.class_weights as a list")


def sample_weights(dataset: Dataset, num_classes: int) -> np.ndarray:
    """Per-sample draw weights for `data.sampler=balanced` (see the module docstring)."""
    labels = sample_labels(dataset)
    if labels is not None and all(len(ls) <= 1 for ls in labels):   # one label per sample
        counts = np.bincount([ls[0] for ls in labels if ls], minlength=num_classes).astype(np.float64)
        return np.array([1.0 / counts[ls[0]] if ls else 0.0 for ls in labels])
    if labels is not None:   # detection: repeat factors
        n = len(labels)
        freq = np.zeros(num_classes)
        for ls in labels:
            freq[list(ls)] += 1
        freq /= max(n, 1)
        rc = np.where(freq > 0, np.maximum(1.0, np.sqrt(REPEAT_THRESHOLD / np.maximum(freq, 1e-12))), 1.0)
        return np.array([max((rc[c] for c in ls), default=1.0) for ls in labels])
    if hasattr(dataset, "load") and hasattr(dataset, "mask_of"):
        total, per = mask_pixel_counts(dataset, num_classes)
        inv = np.where(total > 0, total.sum() / np.maximum(total, 1), 0.0)
        return np.array([max((inv[c] for c in np.flatnonzero(p)), default=1.0) for p in per])
    raise VTError(f"data.sampler=balanced: cannot read the labels of a {type(dataset).__name__}")


class ResampledDataset(Dataset):
    """`dataset` seen through an index table redrawn every epoch (`set_epoch`), with replacement,
    in proportion to `weights`. Same length as `dataset`; attributes not found here are the
    wrapped dataset's (paths, targets, classes...)."""

    def __init__(self, dataset: Dataset, weights: Sequence[float], *, seed: int = 0) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if len(w) != len(dataset) or not np.isfinite(w).all() or w.sum() <= 0:
            raise VTError("data.sampler=balanced: the sample weights are unusable (all zero or not finite)")
        self.dataset, self.p, self.seed = dataset, w / w.sum(), seed
        # shared memory: persistent loader workers see the table the main process drew
        self.table = torch.zeros(len(dataset), dtype=torch.int64).share_memory_()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch, 0x5A11])
        self.table.copy_(torch.from_numpy(rng.choice(len(self.p), size=len(self.p), replace=True, p=self.p)))
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, i: int):
        return self.dataset[int(self.table[i])]

    def __getattr__(self, name: str):
        if name == "dataset":   # not yet set (unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def balanced(dataset: Dataset, num_classes: int, *, seed: int = 0) -> ResampledDataset:
    return ResampledDataset(dataset, sample_weights(dataset, num_classes), seed=seed)


def drawn_fraction(dataset: ResampledDataset, labels: Sequence[int]) -> np.ndarray:
    """The share of each class among this epoch's draws (classification; for tests and reports)."""
    drawn = np.asarray(labels)[dataset.table.numpy()]
    return np.bincount(drawn, minlength=int(max(labels)) + 1) / max(len(drawn), 1)


__all__ = ["balanced", "class_counts", "sample_weights", "ResampledDataset", "REPEAT_THRESHOLD"]
