"""Task-aligned assignment (TOOD / YOLOv8) and the YOLO-style losses.

Per image, with A anchor points (one per feature-map cell) and G ground-truth boxes:

    alignment t[g, a] = score[a, class_g] ** alpha * IoU(pred_box[a], gt_g) ** beta   (points inside gt_g)
    positives: the top-k points of t for each gt; a point claimed by several gts keeps the one of highest IoU
    classification target: one-hot of the gt's class * t normalised per gt to its best IoU
    losses: BCE on all points (sum / sum of targets) and (1 - CIoU) on positives weighted by the target

Predictions are not detached from the loss, only from the assignment (as in YOLOv8).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, complete_box_iou_loss


@dataclass(frozen=True)
class AssignerSettings:
    topk: int = 10          # positives per gt; YOLOv8 uses 10 (13 in TOOD)
    alpha: float = 0.5      # weight of the classification score in the alignment metric
    beta: float = 6.0       # weight of the IoU: localisation dominates which points are positive
    cls_weight: float = 1.0
    box_weight: float = 2.5  # PP-YOLOE's GIoU weight without DFL; YOLOv8 (with DFL) uses 7.5 / 0.5


def assign(scores: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, gt_boxes: torch.Tensor,
           gt_labels: torch.Tensor, s: AssignerSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`scores (A, C)` sigmoid, `boxes (A, 4)` xyxy, `points (A, 2)`, gts `(G, 4)` / `(G,)` ->
    `(positive (A,) bool, gt index (A,) int64, target score (A,) float)`."""
    num_gt = len(gt_boxes)
    x, y = points[:, 0], points[:, 1]
    inside = ((x[None] > gt_boxes[:, 0:1]) & (x[None] < gt_boxes[:, 2:3]) &
              (y[None] > gt_boxes[:, 1:2]) & (y[None] < gt_boxes[:, 3:4]))
    # a gt smaller than the finest stride may hold no point: give it the point nearest its centre
    empty = ~inside.any(1)
    if empty.any():
        centres = (gt_boxes[empty, :2] + gt_boxes[empty, 2:]) / 2
        inside[empty.nonzero()[:, 0], torch.cdist(centres, points).argmin(1)] = True
    ious = box_iou(gt_boxes, boxes).clamp(min=0)
    align = scores[:, gt_labels].T.pow(s.alpha) * ious.pow(s.beta) * inside
    k = min(s.topk, align.shape[1])
    top = torch.zeros_like(inside)
    top.scatter_(1, align.topk(k, dim=1).indices, True)
    pos = top & inside & (align > 0) | (inside & empty[:, None])
    # a point claimed by several gts keeps the gt it overlaps most
    multi = pos.sum(0) > 1
    if multi.any():
        best = ious.argmax(0)
        pos[:, multi] = F.one_hot(best[multi], num_gt).T.bool()
    fg = pos.any(0)
    gt_index = pos.float().argmax(0)
    align = align * pos
    norm = align / (align.amax(1, keepdim=True) + 1e-9) * (ious * pos).amax(1, keepdim=True)
    return fg, gt_index, norm.amax(0)


def yolo_losses(cls_logits: list[torch.Tensor], pred_boxes: list[torch.Tensor], points: torch.Tensor,
                targets: list[dict], s: AssignerSettings) -> dict[str, torch.Tensor]:
    """Per image `cls_logits (A, C)`, `pred_boxes (A, 4)`; targets `{"boxes", "labels"}` in the same
    (resized) pixels -> `{"loss_classifier", "loss_box_reg"}`, each summed over the batch and
    divided by the sum of target scores (at least 1)."""
    cls_sum = box_sum = cls_logits[0].new_zeros(())
    target_sum = cls_logits[0].new_zeros(())
    for logits, boxes, t in zip(cls_logits, pred_boxes, targets):
        target = torch.zeros_like(logits)
        if len(t["boxes"]):
            with torch.no_grad():
                fg, gt_index, score = assign(logits.sigmoid(), boxes, points, t["boxes"], t["labels"], s)
            if fg.any():
                labels = t["labels"][gt_index[fg]]
                target[fg.nonzero()[:, 0], labels] = score[fg]
                weight = score[fg]
                box_sum = box_sum + (complete_box_iou_loss(boxes[fg], t["boxes"][gt_index[fg]],
                                                           reduction="none") * weight).sum()
                target_sum = target_sum + weight.sum()
        cls_sum = cls_sum + F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    denom = target_sum.clamp(min=1.0)
    return {"loss_classifier": s.cls_weight * cls_sum / denom, "loss_box_reg": s.box_weight * box_sum / denom}
