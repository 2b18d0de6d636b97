"""Detector assembly: registry backbone -> FPN -> a detection head (Faster R-CNN, RetinaNet, yours).

    backbone (maps at strides 8/16/32, read from `feature_info`)
      -> FeaturePyramid (torchvision FeaturePyramidNetwork, `fpn_channels` each)
      -> head builder (see heads.py) -> torchvision-style detector
      -> Detector (labels from 0 outside; background, if the head has one, only inside)

`Detector.forward(images, targets=None)`: `images` a list of `(3, H, W)` float tensors in [0, 1]
(any sizes: the detector resizes so the longer side is `image_size` and normalises with the
backbone's mean / std); `targets` a list of `{"boxes": (N, 4) xyxy pixels, "labels": (N,) int64
from 0}`. Train mode returns a dict of losses; eval mode a list of `{"boxes", "labels" (from 0),
"scores"}` in each input image's own pixels.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from vision_transfer.backbones.base import Backbone
from vision_transfer.errors import VTError

DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


class FeaturePyramid(nn.Module):
    """The `backbone` of a torchvision detector: `forward(x) -> OrderedDict[str, Tensor]` with
    `out_channels`. Names are "0", "1", ... for the backbone's levels, then the extra block's."""

    def __init__(self, backbone: Backbone, *, levels: Sequence[int], out_channels: int,
                 extra_blocks: ExtraFPNBlock | None = None, fpn: nn.Module | None = None) -> None:
        super().__init__()
        self.body = backbone
        self.levels = list(levels)                 # positions in the backbone's list of maps
        infos = [backbone.feature_info[i] for i in self.levels]
        self.strides = [f.stride for f in infos]
        self.fpn = fpn or FeaturePyramidNetwork([f.channels for f in infos], out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels
        self.names = [str(k) for k in range(len(self.levels))]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((n, feats[i]) for n, i in zip(self.names, self.levels)))


class Detector(nn.Module):
    """Wraps a torchvision-style detector: labels from 0 outside, `label_offset` inside (1 when
    class 0 is background). With `freeze_backbone_bn`, the backbone's BatchNorm layers stay in
    eval mode across `train()` (pretrained statistics; batches of 4 would wreck them)."""

    def __init__(self, detector: nn.Module, *, label_offset: int, freeze_backbone_bn: bool) -> None:
        super().__init__()
        self.detector = detector
        self.label_offset = label_offset
        self.freeze_backbone_bn = freeze_backbone_bn

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if targets is not None:
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + self.label_offset} for t in targets]
        out = self.detector(images, targets)
        if isinstance(out, tuple):   # torchvision under TorchScript returns (losses, detections)
            out = out[0] if self.training else out[1]
        if not self.training and self.label_offset:
            out = [{**o, "labels": o["labels"] - self.label_offset} for o in out]
        return out

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        if mode and self.freeze_backbone_bn:
            for m in self.backbone.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    @property
    def backbone(self) -> Backbone:
        from vision_transfer.task import find_backbone

        return find_backbone(self.detector)


def select_levels(backbone: Backbone) -> list[int]:
    """Which of the backbone's maps feed the FPN: all of them when `out_indices` was chosen;
    by default (every stage returned) the deepest three at stride >= 8 (stride 4 maps cost much
    and small images have few objects that small)."""
    infos = backbone.feature_info
    if len(backbone.out_indices) != len(backbone.stage_info):
        return list(range(len(infos)))
    deep = [i for i, f in enumerate(infos) if f.stride >= 8 and f.channels > 0]
    picked: list[int] = []
    for i in deep:                      # one map per stride: the deepest of each
        if picked and infos[picked[-1]].stride == infos[i].stride:
            picked[-1] = i
        else:
            picked.append(i)
    return picked[-3:] if picked else [len(infos) - 1]


def wants_extra_level(strides: Sequence[int], image_size: int) -> bool:
    """A pooled level above the deepest one when its anchors (3 x stride) are under a third of
    the image: large objects then still meet an anchor of their size."""
    return 3 * strides[-1] * 3 < image_size


def default_anchor_sizes(strides: Sequence[int]) -> list[list[int]]:
    """Two sizes per level, 2 and 3 times its stride: ((16, 24), (32, 48), (64, 96)) at 8/16/32."""
    return [[2 * s, 3 * s] for s in strides]


def check_anchors(anchor_sizes: Sequence[Sequence[int]] | None, aspect_ratios: Sequence[float] | None,
                  strides: Sequence[int]) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[float, ...], ...]]:
    """(sizes per level, ratios per level) for torchvision's AnchorGenerator; user values are
    validated against the levels (their strides are named in the error)."""
    sizes = default_anchor_sizes(strides) if anchor_sizes is None else [list(s) for s in anchor_sizes]
    if len(sizes) != len(strides):
        raise VTError(f"model.anchor_sizes has {len(sizes)} levels but the detector has {len(strides)} "
                      f"(strides {list(strides)}): give one list of sizes per level, e.g. "
                      f"{default_anchor_sizes(strides)}")
    if len({len(s) for s in sizes}) != 1 or not all(v > 0 for s in sizes for v in s):
        raise VTError(f"model.anchor_sizes {sizes}: every level needs the same number of positive sizes")
    ratios = list(aspect_ratios or DEFAULT_ASPECT_RATIOS)
    if not ratios or not all(r > 0 and math.isfinite(r) for r in ratios):
        raise VTError(f"model.aspect_ratios {ratios}: give positive numbers (height / width), e.g. [0.5, 1, 2]")
    return tuple(tuple(int(v) for v in s) for s in sizes), tuple(tuple(float(r) for r in ratios) for _ in sizes)
