"""Segmentation metrics from one confusion matrix accumulated over the whole split.

`confusion_matrix[t, p]` counts pixels whose true class is `t` and predicted class `p`; pixels
labelled `IGNORE_INDEX` (255) are left out. Every number comes from that matrix, so summing the
matrices of several batches (or processes) gives exactly the numbers of one pass over all pixels.

    cm = ConfusionMatrix(num_classes=2)
    cm.update(pred, target)              # (N, H, W) int tensors
    segmentation_metrics(cm.matrix, ["background", "nucleus"])
    # {"mIoU", "mDice", "pixel_accuracy", "per_class_IoU": {name: IoU}, "per_class_Dice", "confusion_matrix"}

A class that neither occurs in the ground truth nor is predicted has no IoU: it shows as -1
(reports print "n/a") and is left out of the means.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vision_transfer.task import IGNORE_INDEX


class ConfusionMatrix:
    """A `(C, C)` int64 counter: rows = true class, columns = predicted class."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu"):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """`pred`, `target`: integer tensors of the same shape; ignored pixels are skipped."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred, target = pred.reshape(-1).to(self.matrix.device), target.reshape(-1).to(self.matrix.device)
        keep = target != self.ignore_index
        t, p = target[keep].long(), pred[keep].long()
        if t.numel() and (int(t.max()) >= self.num_classes or int(t.min()) < 0):
            raise ValueError(f"target holds class {int(t.max())}, outside 0..{self.num_classes - 1} "
                             f"and not {self.ignore_index} (ignore)")
        n = self.num_classes
        self.matrix += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def all_reduce(self) -> None:
        """Sum the matrices of every process (DDP); a no-op outside torch.distributed."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)


def segmentation_metrics(matrix: Any, classes: Sequence[str]) -> dict[str, Any]:
    """DESIGN's segmentation metrics from a confusion matrix (fractions in [0, 1])."""
    cm = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    tp = np.diag(cm)
    gt, pred = cm.sum(1), cm.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), -1.0)
    dice = np.where(present, 2 * tp / np.maximum(gt + pred, 1), -1.0)
    total = cm.sum()
    return {
        "mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "mDice": float(dice[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "per_class_IoU": {str(c): float(v) for c, v in zip(classes, iou)},
        "per_class_Dice": {str(c): float(v) for c, v in zip(classes, dice)},
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def miou_from_masks(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], num_classes: int) -> float:
    """mIoU of label masks (numpy, same shapes pairwise): what `vt predict` output scores."""
    cm = ConfusionMatrix(num_classes)
    for p, t in zip(preds, targets):
        cm.update(torch.as_tensor(np.asarray(p, np.int64)), torch.as_tensor(np.asarray(t, np.int64)))
    return segmentation_metrics(cm.matrix, [str(i) for i in range(num_classes)])["mIoU"]
