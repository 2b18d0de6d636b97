"""The segmentation loss: cross-entropy plus an optional soft Dice term, both skipping 255.

Cross-entropy alone under-weights small objects on small data; adding Dice (smp's
`DiceLoss(mode="multiclass")`) pulls the foreground overlap up directly. `dice_weight=0` gives
plain cross-entropy; `class_weights` weight the cross-entropy per class; `focal_gamma` turns the
cross-entropy term into the focal loss (engine/losses.py), for rare classes of few pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vision_transfer.errors import VTError
from vision_transfer.task import IGNORE_INDEX


class SegmentationLoss(nn.Module):
    """`loss(logits (N, C, H, W), mask (N, H, W) int64) -> {"loss", "ce", "dice"}`."""

    def __init__(self, *, num_classes: int, dice_weight: float = 1.0,
                 class_weights: Sequence[float] | None = None, ignore_index: int = IGNORE_INDEX,
                 focal_gamma: float | None = None) -> None:
        super().__init__()
        if class_weights is not None and len(class_weights) != num_classes:
            raise VTError(f"train.class_weights has {len(class_weights)} values but there are {num_classes} "
                          "classes: give one weight per class, in the order of data.classes")
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weight", weight, persistent=False)
        self.ignore_index, self.dice_weight = ignore_index, float(dice_weight)
        self.focal_gamma = focal_gamma
        self.dice = None
        if self.dice_weight > 0:
            from segmentation_models_pytorch.losses import DiceLoss

            self.dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        if self.focal_gamma is not None:
            from vision_transfer.engine.losses import focal_cross_entropy

            ce = focal_cross_entropy(logits, mask, gamma=self.focal_gamma, weight=self.weight,
                                     ignore_index=self.ignore_index)
        else:
            ce = nn.functional.cross_entropy(logits, mask, weight=self.weight, ignore_index=self.ignore_index)
        if not (mask != self.ignore_index).any():   # an all-ignore batch: CE is NaN, contribute nothing
            ce = logits.sum() * 0.0
        out = {"ce": ce.detach()}
        loss = ce
        if self.dice is not None:
            d = self.dice(logits, mask)
            out["dice"] = d.detach()
            loss = loss + self.dice_weight * d
        out["loss"] = loss
        return out
