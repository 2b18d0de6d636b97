"""The hold-out split of every task (`data.val_split`): one rule, one seeded shuffle.

    train_idx, val_idx = hold_out(len(items), fraction=0.2, seed=0)            # detection, segmentation
    train_idx, val_idx = hold_out(len(items), fraction=0.2, seed=0, labels=y)  # classification: per class

A group of n items (the whole set, or one class) gives `min(n - 1, max(1, round(n * fraction)))`
items to validation when `fraction > 0` and n >= 2, else none: a tiny set still gets one
validation image, and never loses its last training image.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def val_count(n: int, fraction: float) -> int:
    """How many of `n` items the rule above holds out."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, int(round(n * fraction))))


def hold_out(n: int, *, fraction: float, seed: int,
             labels: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """(train indices, val indices), each sorted; stratified per label when `labels` is given."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else \
        [np.flatnonzero(np.asarray(labels) == c) for c in sorted(set(labels))]
    train, val = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        k = val_count(len(idx), fraction)
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(val)
