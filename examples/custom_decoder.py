"""A custom segmentation decoder registered through the API, trained on generated shapes.

A decoder builder receives the backbone's `feature_info` (channels and stride of each map) and
the number of classes; its module maps the list of feature maps to logits at any resolution
(the model upsamples them to the input and crops padding). Once registered, the name works
everywhere a built-in head does: `model.head=light_fpn` on the command line, in YAML recipes,
and when a checkpoint is rebuilt (import this module first).

    python examples/custom_decoder.py            # about a minute on 2 CPU cores
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import vision_transfer as vt  # noqa: F401 - the package the plugin below extends
from vision_transfer.data.synthetic import make_scene
from vision_transfer.tasks.segmentation import register_head


class LightFPN(nn.Module):
    """1x1 lateral convs to `width` channels, summed top-down, one 3x3 conv and a classifier."""

    def __init__(self, channels: list[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            x = F.interpolate(x, size=f.shape[-2:], mode="nearest") + lat(f)
        return self.classify(self.fuse(x))   # at the shallowest map's stride; upsampled by the model


@register_head("light_fpn")
def light_fpn(*, feature_info, num_classes: int, **options) -> nn.Module:
    return LightFPN([f.channels for f in feature_info], num_classes)


def write_tiles(root: Path, seeds, size: int = 96) -> None:
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for s in seeds:
        scene = make_scene(seed=s, size=size, max_objects=4)
        Image.fromarray(scene["image"]).save(root / "images" / f"{s}.png")
        Image.fromarray((scene["mask"] > 0).astype(np.uint8)).save(root / "masks" / f"{s}.png")


def main() -> None:
    from vision_transfer.api import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiles(root / "train", range(24))
        write_tiles(root / "val", range(100, 108))
        run = train("segmentation", overrides={
            "data.format": "masks", "data.classes": ["background", "shape"],
            "data.train.images": str(root / "train/images"), "data.train.masks": str(root / "train/masks"),
            "data.val.images": str(root / "val/images"), "data.val.masks": str(root / "val/masks"),
            "model.backbone": "tf_efficientnet_lite0", "model.weights": "imagenet", "model.head": "light_fpn",
            "train.epochs": 8, "train.batch_size": 8, "train.image_size": 96, "train.device": "cpu",
            "run.out_dir": str(root / "run"), "run.tensorboard": False})
        print(f"light_fpn decoder: mIoU {run.metrics['mIoU']:.3f} after {run.best_epoch} epochs")


if __name__ == "__main__":
    main()
