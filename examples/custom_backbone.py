"""A custom backbone in a few lines: any network given as its ordered stages (stem first).

Every task and strategy then accepts it by name: `vt train segmentation model.backbone=tiny_cnn ...`
once this module is imported (or pass the instance: `vt.train(..., backbone=tiny_cnn(weights=None))`).
Channels and strides are measured for you; `freeze_layers`, `layer_lr_decay`, FPN and U-Net read them.
"""
from torch import nn

import vision_transfer as vt


def block(cin: int, cout: int) -> nn.Module:   # halves the resolution
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@vt.register_backbone("tiny_cnn", family="custom")
def tiny_cnn(*, weights=None, out_indices=None) -> vt.Backbone:
    stages = [block(3, 16), block(16, 24), block(24, 32), block(32, 48), block(48, 64)]   # strides 2..32
    return vt.StagedBackbone(stages, name="tiny_cnn", out_indices=out_indices)
