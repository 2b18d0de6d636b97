"""Detection heads: a registry of builders `f(spec: DetectorInputs) -> torchvision-style detector`.

A detector built here takes `(images: list[(3, H, W)], targets: list[{"boxes", "labels"}] | None)`
and returns losses in train mode, detections in eval mode (torchvision's contract). Register your
own with one decorator; `background=True` says that class 0 is background inside it (the task
then feeds labels + 1 and hands back labels - 1):

    from tasks.detection import register_detection_head     # vision_transfer.tasks.detection

    @register_detection_head("my_head", background=True)
    def my_head(spec: DetectorInputs) -> nn.Module:
        body = spec.pyramid()                                  # backbone -> FPN
        return FasterRCNN(body, num_classes=spec.num_classes + 1, **spec.transform_kwargs(), ...)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from vision_transfer.backbones.base import Backbone
from vision_transfer.registry import Registry

from .model import FeaturePyramid, check_anchors, wants_extra_level

HEADS: Registry[Callable[..., nn.Module]] = Registry("detection head")


def register_detection_head(name: str | None = None, *, background: bool = True, override: bool = False):
    """Decorator: `@register_detection_head("name", background=True)` on `f(spec) -> nn.Module`."""
    return HEADS.register(name, override=override, background=background)


@dataclass
class DetectorInputs:
    """What a head builder gets: the backbone, the classes and the settings of the run."""

    backbone: Backbone
    num_classes: int                       # object classes, without background
    levels: list[int]                      # which backbone maps feed the FPN
    fpn_channels: int = 128
    anchor_sizes: Sequence[Sequence[int]] | None = None   # one list per pyramid level; None: 2x, 3x stride
    aspect_ratios: Sequence[float] | None = None
    image_size: int = 512                  # the detector resizes the longer image side to this

    def strides(self, extra: int = 0) -> list[int]:
        base = [self.backbone.feature_info[i].stride for i in self.levels]
        return base + [base[-1] * 2 ** (k + 1) for k in range(extra)]

    def pyramid(self, extra_blocks: ExtraFPNBlock | None = None) -> FeaturePyramid:
        return FeaturePyramid(self.backbone, levels=self.levels, out_channels=self.fpn_channels,
                              extra_blocks=extra_blocks)

    def anchor_generator(self, strides: Sequence[int]) -> AnchorGenerator:
        sizes, ratios = check_anchors(self.anchor_sizes, self.aspect_ratios, strides)
        return AnchorGenerator(sizes, ratios)

    def transform_kwargs(self) -> dict:
        """Resize to `image_size` (not torchvision's 800 / 1333) and normalise like the backbone's weights."""
        pre = self.backbone.preprocessing
        return {"min_size": self.image_size, "max_size": self.image_size,
                "image_mean": list(pre.mean), "image_std": list(pre.std)}

    def extra_levels(self, per_block: int) -> int:
        """Levels an extra FPN block adds (`per_block` or 0): user anchors decide by their count,
        else `wants_extra_level` (large images for the deepest stride)."""
        if self.anchor_sizes is not None:
            return per_block if len(self.anchor_sizes) == len(self.levels) + per_block else 0
        return per_block if wants_extra_level(self.strides(), self.image_size) else 0


@register_detection_head("fasterrcnn", background=True)
def fasterrcnn(spec: DetectorInputs) -> nn.Module:
    """torchvision Faster R-CNN over the FPN, box predictor replaced for `num_classes` + background."""
    extra = spec.extra_levels(1)                         # LastLevelMaxPool adds one level
    body = spec.pyramid(LastLevelMaxPool() if extra else None)
    model = FasterRCNN(body, num_classes=spec.num_classes + 1,
                       rpn_anchor_generator=spec.anchor_generator(spec.strides(extra)),
                       box_roi_pool=MultiScaleRoIAlign(featmap_names=body.names, output_size=7, sampling_ratio=2),
                       # fewer proposals and sampled RoIs than torchvision's 2000 / 512 (300 at test, as in
                       # the Faster R-CNN paper): small images with tens of objects need no more, and the
                       # box head dominates the cost on a CPU
                       rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=1000,
                       rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300, box_batch_size_per_image=256,
                       **spec.transform_kwargs())
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, spec.num_classes + 1)
    return model


@register_detection_head("retinanet", background=False)
def retinanet(spec: DetectorInputs) -> nn.Module:
    """torchvision RetinaNet over the same FPN (P6 / P7 added when the image is large for the levels)."""
    extra = spec.extra_levels(2)                         # LastLevelP6P7 adds two levels
    c = spec.fpn_channels
    body = spec.pyramid(LastLevelP6P7(c, c) if extra else None)
    return RetinaNet(body, num_classes=spec.num_classes, anchor_generator=spec.anchor_generator(spec.strides(extra)),
                     **spec.transform_kwargs())
