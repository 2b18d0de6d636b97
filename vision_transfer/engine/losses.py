"""Losses for imbalanced classes, shared by classification and segmentation.

- `class_weights_from_counts`: inverse frequency (`n / (C * n_c)`, scikit-learn's "balanced") or
  the effective number of samples (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number
  of Samples": `w_c ∝ (1 - beta) / (1 - beta ** n_c)`), both normalised to mean 1 over the classes present.
- `focal_cross_entropy`: softmax focal loss (Lin et al. 2017): cross-entropy scaled by
  `(1 - p_t) ** gamma`, so well-classified samples (the many easy majority ones) weigh less.
- `ClassificationLoss`: what a classifier's `criterion` is (weights, label smoothing, focal).
- `MultiLabelLoss`: a multi-label classifier's criterion (one sigmoid per class, binary cross-entropy).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VTError

EFFECTIVE_BETA = 0.999   # Cui et al.'s best beta on long-tailed CIFAR was 0.999-0.9999; 0.999 suits hundreds


def class_weights_from_counts(counts: Sequence[int], *, rule: str = "inverse",
                              beta: float = EFFECTIVE_BETA) -> list[float]:
    """One weight per class (mean 1 over the classes present). A class with no samples gets weight 0:
    it cannot contribute to the loss anyway."""
    n = torch.as_tensor(list(counts), dtype=torch.float64)
    if n.numel() == 0 or n.sum() <= 0:
        raise VTError("train.class_weights=auto: the training split has no labelled samples to count")
    present = n > 0
    if rule == "inverse":
        w = torch.where(present, n.sum() / (present.sum() * n.clamp(min=1)), torch.zeros_like(n))
    elif rule == "effective":
        w = torch.where(present, (1 - beta) / (1 - beta ** n), torch.zeros_like(n))
    else:
        raise VTError(f"unknown class-weight rule {rule!r}; valid: inverse, effective")
    w = w * present.sum() / w.sum()
    return [round(float(x), 6) for x in w]


def focal_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
                        weight: torch.Tensor | None = None, ignore_index: int = -100,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """`logits (N, C[, H, W])`, `target (N[, H, W])` int64 -> scalar. gamma=0 is (weighted) cross-entropy.

    The mean is normalised by the summed class weights of the valid targets, as
    `F.cross_entropy(weight=...)` does, so the two agree at gamma=0."""
    ce = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index,
                         label_smoothing=label_smoothing)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    scale = (1 - logp.exp()).clamp(min=0) ** gamma
    w = weight[safe] if weight is not None else torch.ones_like(ce)
    w = w * valid
    return (w * scale * ce).sum() / w.sum().clamp(min=1e-12)


class ClassificationLoss(nn.Module):
    """`loss(logits (N, C), labels (N,)) -> scalar`: cross-entropy or focal, class weights, smoothing."""

    def __init__(self, *, num_classes: int, loss: str = "ce", class_weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.0, focal_gamma: float = 2.0) -> None:
        super().__init__()
        if loss not in ("ce", "focal"):
            raise VTError(f"unknown train.loss {loss!r}; valid: ce, focal")
        if class_weights is not None and len(class_weights) != num_classes:
            raise VTError(f"train.class_weights has {len(class_weights)} values but there are {num_classes} "
                          "classes: give one weight per class, in the order of data.classes")
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weight", weight, persistent=False)
        self.loss, self.label_smoothing, self.gamma = loss, label_smoothing, focal_gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss == "focal":
            return focal_cross_entropy(logits, labels, gamma=self.gamma, weight=self.weight,
                                       label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits, labels, weight=self.weight, label_smoothing=self.label_smoothing)


class MultiLabelLoss(nn.Module):
    """`loss(logits (N, C), targets (N, C) in {0, 1}) -> scalar`: binary cross-entropy with logits,
    averaged over images and classes; `label_smoothing` moves the targets to eps/2 and 1 - eps/2."""

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, targets)
