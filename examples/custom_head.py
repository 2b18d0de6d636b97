"""A custom classification head, registered with one decorator and trained on generated shapes.

    python examples/custom_head.py

The head sees the backbone's deepest feature map `(N, C, H, W)`; this one pools with both mean
and max (a common trick for small defects that average pooling washes out).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from PIL import Image
from torch import nn

import vision_transfer as vt
from vision_transfer.data.synthetic import SHAPE_CLASSES, make_classification_images


@vt.register_head("classification", "meanmax", override=True)
def meanmax_head(*, in_channels: int, num_classes: int, dropout: float = 0.0, **_) -> nn.Module:
    class MeanMax(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * in_channels, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))

    return MeanMax()


def write_shapes(root: Path) -> Path:
    for split, n, seed in (("train", 10, 0), ("val", 5, 1)):
        for i, (img, label) in enumerate(make_classification_images(per_class=n, size=40, seed=seed)):
            d = root / split / SHAPE_CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
    return root


def main(epochs: int = 5, quiet: bool = False):
    root = Path(tempfile.mkdtemp(prefix="vt-custom-head-"))
    write_shapes(root / "data")
    run = vt.train("classification", overrides={
        "data.format": "folder", "data.root": str(root / "data"), "model.head": "meanmax",
        "model.backbone": "tf_efficientnet_lite0", "model.weights": "imagenet",
        "transfer.strategy": "finetune", "transfer.freeze_layers": 3,
        # 32-px images leave 1x1 maps at stride 32: batch statistics of 8 numbers are noise, so
        # the pretrained BatchNorm statistics are kept (eval) while its affine weights still train
        "transfer.bn": "eval",
        "train.epochs": epochs, "train.image_size": 32, "train.batch_size": 8, "data.num_workers": 0,
        "run.out_dir": str(root / "run"), "run.tensorboard": False})
    if not quiet:
        print(f"accuracy {run.metrics['accuracy']:.3f}; checkpoint {run.out_dir / 'checkpoints' / 'best.pt'}")
    return run


if __name__ == "__main__":
    main()
