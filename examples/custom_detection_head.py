"""A custom detection head, registered through the API, trained on generated shapes.

The head: Faster R-CNN whose box head is four 3x3 convolutions + one FC layer (torchvision's
`FastRCNNConvFCHead`, as in Faster R-CNN v2) instead of two FC layers. Everything else (backbone,
FPN, anchors, resize, normalisation) comes from `DetectorInputs`, so it works on any backbone.

    python examples/custom_detection_head.py [--epochs 3] [--out /tmp/custom-head]

Checkpoints store the head's name: rebuilding one (`vt eval`, `vt predict`) needs this
registration imported first (`import examples.custom_detection_head` or your own module).
"""
from __future__ import annotations

import argparse

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

import vision_transfer.api as vt
from vision_transfer.tasks.detection import DetectorInputs, register_detection_head
from vision_transfer.tasks.detection.synthetic import write_scenes


@register_detection_head("fasterrcnn_convfc", background=True)   # class 0 is background inside
def fasterrcnn_convfc(spec: DetectorInputs) -> nn.Module:
    body = spec.pyramid()                                          # registry backbone -> FPN
    c = spec.fpn_channels
    box_head = FastRCNNConvFCHead((c, 7, 7), [c] * 4, [256], norm_layer=nn.BatchNorm2d)
    return FasterRCNN(body, rpn_anchor_generator=spec.anchor_generator(spec.strides()),
                      box_roi_pool=MultiScaleRoIAlign(body.names, 7, 2), box_head=box_head,
                      box_predictor=FastRCNNPredictor(256, spec.num_classes + 1), **spec.transform_kwargs())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="/tmp/custom-head")
    args = ap.parse_args()
    data = write_scenes(f"{args.out}/data", n=16, size=96)["coco"]
    run = vt.train("detection", overrides={
        "data.format": "coco", "data.train.images": data["images"], "data.train.annotations": data["annotations"],
        "model.head": "fasterrcnn_convfc", "model.backbone": "resnet18", "model.weights": "none",
        "model.fpn_channels": 64, "train.image_size": 96, "train.batch_size": 4, "train.epochs": args.epochs,
        "run.out_dir": f"{args.out}/run"})
    print(f"AP50 {run.metrics['AP50']:.3f} after {args.epochs} epochs; run folder {run.out_dir}")


if __name__ == "__main__":
    main()
