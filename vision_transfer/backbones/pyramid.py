"""ViTDet's simple feature pyramid (Li et al. 2022, "Exploring Plain Vision Transformer Backbones
for Object Detection", section 3): from the last stride-16 map of a plain ViT alone,

    stride 4:  ConvT 2x2/2 -> LN -> GELU -> ConvT 2x2/2 -> LN      (C/4 channels)
    stride 8:  ConvT 2x2/2 -> LN                                   (C/2 channels)
    stride 16: identity (the ViT's own final norm)                 (C channels)
    stride 32: max-pool 2x2/2                                      (C channels)

Only the two upsampling branches have parameters; the detection FPN or segmentation decoder on
top adds the per-level 1x1/3x3 convolutions ViTDet puts there. Only the requested levels run.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

STRIDES = (4, 8, 16, 32)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ViTDet's and ConvNeXt's norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


def pyramid_channels(dim: int) -> list[int]:
    """Channels of the four levels, strides 4/8/16/32, over a `dim`-channel ViT."""
    return [max(dim // 4, 1), max(dim // 2, 1), dim, dim]


class SimpleFeaturePyramid(nn.Module):
    """`forward(x: (N, C, H/16, W/16), levels) -> [maps]` at the strides of `levels` (0..3 = 4/8/16/32)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        c4, c8, _, _ = pyramid_channels(dim)
        self.up4 = nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                                 nn.ConvTranspose2d(dim // 2, c4, 2, stride=2), LayerNorm2d(c4))
        self.up8 = nn.Sequential(nn.ConvTranspose2d(dim, c8, 2, stride=2), LayerNorm2d(c8))

    def forward(self, x: torch.Tensor, levels: Sequence[int]) -> list[torch.Tensor]:
        ops = (self.up4, self.up8, nn.Identity(), _pool)
        return [ops[i](x) for i in levels]


def _pool(x: torch.Tensor) -> torch.Tensor:
    # ceil_mode: an odd stride-16 grid still gives ceil(H/32), as CNN stages do
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
