"""A YOLO-style real-time detector (YOLOX / YOLOv8 design), written here, permissively licensed.

    registry backbone (maps at strides 8/16/32 from feature_info)
      -> FPN top-down (torchvision FeaturePyramidNetwork) -> PAN bottom-up (3x3 stride-2 convs)
      -> per level a decoupled head: a classification branch (2 conv-BN-SiLU -> C logits) and a box
         branch (2 conv-BN-SiLU -> 4 distances l, t, r, b in strides, softplus), anchor-free: one
         point per cell at its centre
      -> train: task-aligned assignment + BCE + CIoU (loss.py); eval: sigmoid scores, top-k
         candidates, class-wise NMS, boxes back in each image's pixels

The resize / normalise / batch step and the box rescaling are torchvision's
GeneralizedRCNNTransform, as in the other heads, so the detector has their contract
(`forward(images, targets=None)`, labels from 0, no background) and exports the same way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import _topk_min
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms, clip_boxes_to_image

from ..heads import DetectorInputs, register_detection_head
from ..model import FeaturePyramid
from .loss import AssignerSettings, yolo_losses


def conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class PathAggregation(nn.Module):
    """Bottom-up path over FPN maps (shallow to deep): out[i] = fuse(p[i] + down(out[i - 1]))."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(conv_bn_act(channels, channels, 2) for _ in range(levels - 1))
        self.fuse = nn.ModuleList(conv_bn_act(channels, channels) for _ in range(levels - 1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [feats[0]]
        for p, down, fuse in zip(feats[1:], self.down, self.fuse):
            d = down(out[-1])
            out.append(fuse(p + d[..., :p.shape[-2], :p.shape[-1]]))
        return out


class DecoupledHead(nn.Module):
    """One level: `(N, C, H, W)` -> class logits `(N, H*W, K)` and distances `(N, H*W, 4)` in strides."""

    def __init__(self, channels: int, num_classes: int, prior: float = 0.01) -> None:
        super().__init__()
        self.cls = nn.Sequential(conv_bn_act(channels, channels), conv_bn_act(channels, channels),
                                 nn.Conv2d(channels, num_classes, 1))
        self.box = nn.Sequential(conv_bn_act(channels, channels), conv_bn_act(channels, channels),
                                 nn.Conv2d(channels, 4, 1))
        nn.init.constant_(self.cls[-1].bias, -math.log((1 - prior) / prior))   # rare positives at the start
        nn.init.constant_(self.box[-1].bias, 1.0)                              # softplus(1) ~ 1.3 strides

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(x).flatten(2).transpose(1, 2), F.softplus(self.box(x)).flatten(2).transpose(1, 2)


def grid_points(feats: list[torch.Tensor], strides: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres `(A, 2)` in input pixels and the stride of each `(A, 1)`, level by level."""
    points, scale = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        ys = (torch.arange(h, device=f.device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=f.device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((xx.reshape(-1), yy.reshape(-1)), 1))
        scale.append(torch.full_like(points[-1][:, :1], float(s)))
    return torch.cat(points), torch.cat(scale)


class YOLODetector(nn.Module):
    def __init__(self, body: FeaturePyramid, *, num_classes: int, transform: GeneralizedRCNNTransform,
                 score_thresh: float = 0.05, nms_thresh: float = 0.6, detections_per_img: int = 100,
                 topk_candidates: int = 1000, assigner: AssignerSettings = AssignerSettings()) -> None:
        super().__init__()
        self.backbone, self.transform = body, transform
        c = body.out_channels
        self.pan = PathAggregation(c, len(body.strides))
        self.heads = nn.ModuleList(DecoupledHead(c, num_classes) for _ in body.strides)
        self.strides = list(body.strides)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates
        self.assigner = assigner

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        # shape entries, not int(): int() would freeze the export's size into a traced graph
        original_sizes = [(im.shape[-2], im.shape[-1]) for im in images]
        batch, targets = self.transform(images, targets)
        feats = self.pan(list(self.backbone(batch.tensors).values()))
        outs = [head(f) for head, f in zip(self.heads, feats)]
        logits = torch.cat([o[0] for o in outs], 1)                       # (N, A, K)
        points, scale = grid_points(feats, self.strides)
        dist = torch.cat([o[1] for o in outs], 1) * scale                 # (N, A, 4) pixels
        boxes = torch.cat((points - dist[..., :2], points + dist[..., 2:]), -1)
        if self.training:
            return yolo_losses(list(logits), list(boxes), points, targets, self.assigner)
        dets = [self._postprocess(lg, bx, size) for lg, bx, size in zip(logits, boxes, batch.image_sizes)]
        return self.transform.postprocess(dets, batch.image_sizes, original_sizes)

    def _postprocess(self, logits: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> dict:
        """`(A, K)` logits and `(A, 4)` boxes of one image -> its detections after class-wise NMS."""
        num_classes = logits.shape[1]
        scores = logits.sigmoid().flatten()
        keep = scores > self.score_thresh
        scores, idx = scores[keep], keep.nonzero()[:, 0]
        k = _topk_min(scores, self.topk_candidates, 0)
        scores, order = scores.topk(k)
        idx = idx[order]
        labels = idx % num_classes
        picked = clip_boxes_to_image(boxes[torch.div(idx, num_classes, rounding_mode="floor")], size)
        keep = batched_nms(picked, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": picked[keep], "scores": scores[keep], "labels": labels[keep]}


@register_detection_head("yolo", background=False)
def yolo(spec: DetectorInputs) -> nn.Module:
    """The YOLO-style detector over the FPN of `spec` (no extra levels: strides 8/16/32 suffice
    for the image sizes the suite trains at, and each level costs a head)."""
    pre = spec.backbone.preprocessing
    transform = GeneralizedRCNNTransform(spec.image_size, spec.image_size, list(pre.mean), list(pre.std))
    return YOLODetector(spec.pyramid(), num_classes=spec.num_classes, transform=transform)
