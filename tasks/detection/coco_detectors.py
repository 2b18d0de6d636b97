"""torchvision's COCO-trained Faster R-CNNs as a starting point: `model.weights=coco`.

    vt train detection model.backbone=fasterrcnn_resnet50_fpn_v2 model.weights=coco ...

Registered as backbones (family `coco_detector`) so that a run stores them like any other: the
registry `Backbone` is the detector's own body (ResNet-50 / MobileNetV3 with its COCO weights),
its `stages` split where the FPN taps it, so `transfer.strategy` freezes it like any backbone.
The rest of the detector (FPN, RPN, box head) keeps its COCO weights; only the box predictor is
replaced for your classes, and the resize follows `train.image_size`. The weights are read
from torch's hub cache (no download): missing, the error names the file and the folder.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vision_transfer.backbones import BACKBONES
from vision_transfer.backbones.base import Backbone, FeatureInfo, Preprocessing
from vision_transfer.errors import VTError
from vision_transfer.weights import WeightsRequest, load_state_dict_file, offline_error, torch_hub_checkpoint_dir

COCO_DETECTORS = ("fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn")


def coco_weights_file(name: str):
    """(torchvision weights enum, local path in torch's hub cache) of a COCO detector."""
    from torchvision.models import get_model_weights

    w = get_model_weights(name).COCO_V1
    return w, torch_hub_checkpoint_dir() / w.url.rsplit("/", 1)[-1]


class CocoDetectorBackbone(Backbone):
    """The body of a torchvision COCO detector as a registry backbone; `template` keeps the
    whole detector (FPN, RPN, heads) until `build` assembles it."""

    family = "coco_detector"

    def __init__(self, name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        import torchvision.models as tvm

        if weights.kind in ("imagenet", "hub") or (weights.kind == "tag" and weights.value.lower() not in
                                                  ("coco", "coco_v1")):
            raise VTError(f"{name} takes model.weights=coco (its COCO detector weights), a weights file or none; "
                          f"for ImageNet weights use the plain backbone (e.g. model.backbone=resnet50)")
        sd = None
        if weights.kind == "tag":
            w, path = coco_weights_file(name)
            if not path.is_file():
                raise offline_error(f"COCO weights of {name}", w.url, path.name, path.parent)
            sd = load_state_dict_file(path)
        elif weights.kind == "file":
            sd = load_state_dict_file(weights.value)
        detector = tvm.get_model(name, weights=None, weights_backbone=None, num_classes=91)
        if sd is not None:
            missing, unexpected = detector.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise VTError(f"weights for {name} do not fit: {len(missing)} missing, {len(unexpected)} unexpected "
                              f"tensors (first: {(missing + unexpected)[0]})")
        self.name, self.weights = name, str(weights)
        self.body = detector.backbone.body          # torchvision IntermediateLayerGetter
        self.template = [detector]                  # a list: not registered, the detector is built later
        self.preprocessing = Preprocessing()        # ImageNet mean / std, as torchvision's detectors use
        stages, infos = _split(self.body)
        self._finish(stages, infos, None)           # the FPN taps every stage end


def _split(getter: nn.Module) -> tuple[list[nn.Module], list[FeatureInfo]]:
    """Stages that end where the FPN taps the body (`return_layers`); channels / strides probed."""
    taps = set(getter.return_layers)
    groups: list[list[nn.Module]] = [[]]
    for name, child in getter.named_children():
        groups[-1].append(child)
        if name in taps:
            groups.append([])
    stages = [nn.Sequential(*g) if len(g) > 1 else g[0] for g in groups if g]
    infos, x = [], torch.zeros(1, 3, 128, 128)
    was = getter.training
    getter.eval()
    with torch.no_grad():
        for i, s in enumerate(stages):
            x = s(x)
            infos.append(FeatureInfo(channels=int(x.shape[1]), stride=128 // int(x.shape[-1]), stage=i))
    getter.train(was)
    return stages, infos


def build(backbone: CocoDetectorBackbone, *, num_classes: int, head: Any, image_size: int,
          anchor_sizes: Any = None, aspect_ratios: Any = None) -> nn.Module:
    """The COCO detector around `backbone`, its box predictor replaced for `num_classes` + background."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    from .model import Detector, FeaturePyramid

    if head not in ("default", "fasterrcnn"):
        raise VTError(f"{backbone.name} is a Faster R-CNN: model.head must be fasterrcnn (got {head!r})")
    if anchor_sizes is not None or aspect_ratios is not None:
        raise VTError(f"{backbone.name} keeps its COCO-trained anchors: leave model.anchor_sizes and "
                      "model.aspect_ratios unset")
    detector = backbone.template[0]
    old = detector.backbone
    detector.backbone = FeaturePyramid(backbone, levels=range(len(backbone.feature_info)),
                                       out_channels=old.out_channels, fpn=old.fpn)
    in_features = detector.roi_heads.box_predictor.cls_score.in_features
    detector.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)
    detector.transform.min_size, detector.transform.max_size = (image_size,), image_size
    pretrained = backbone.weights not in (None, "none")
    return Detector(detector, label_offset=1, freeze_backbone_bn=pretrained)


def _builder(name: str):
    def build_backbone(*, weights: WeightsRequest, out_indices: Sequence[int] | None = None) -> Backbone:
        return CocoDetectorBackbone(name, weights=weights, out_indices=out_indices)

    build_backbone.__name__ = name
    return build_backbone


for _name in COCO_DETECTORS:
    if _name not in BACKBONES:
        BACKBONES.add(_name, _builder(_name), family="coco_detector", source="coco_detector")
