"""One-stage detectors from torchvision over any registry backbone: FCOS and SSDlite.

Both sit on the same `FeaturePyramid` as Faster R-CNN and RetinaNet (the backbone's maps at
strides 8/16/32 from `feature_info`, P6 / P7 added when the image is large for them), so any
registry backbone carries them:

    vt train detection model.head=fcos ...      # anchor-free, centre-ness, GIoU (torchvision FCOS)
    vt train detection model.head=ssdlite ...   # SSD with depthwise-separable heads (torchvision SSDlite)
"""
from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from vision_transfer.errors import VTError

from .heads import DetectorInputs, register_detection_head


def _pyramid_with_extra(spec: DetectorInputs):
    extra = spec.extra_levels(2)                         # LastLevelP6P7 adds two levels
    c = spec.fpn_channels
    return spec.pyramid(LastLevelP6P7(c, c) if extra else None), spec.strides(extra)


@register_detection_head("fcos", background=False)
def fcos(spec: DetectorInputs) -> nn.Module:
    """torchvision FCOS: one point per location (its "anchor" is a stride-sized square used for
    centre sampling), classification + centre-ness + ltrb regression with a GIoU loss."""
    if spec.fpn_channels % 32:   # its heads use GroupNorm(32, channels)
        raise VTError(f"model.head=fcos needs model.fpn_channels divisible by 32 (its heads use GroupNorm with "
                      f"32 groups), not {spec.fpn_channels}: e.g. {max(32, spec.fpn_channels // 32 * 32)}")
    body, strides = _pyramid_with_extra(spec)
    anchors = AnchorGenerator(tuple((s,) for s in strides), tuple((1.0,) for _ in strides))
    # score_thresh 0.05 (torchvision: 0.2) so that COCO AP sees the low-confidence tail, as RetinaNet's
    return FCOS(body, num_classes=spec.num_classes, anchor_generator=anchors, score_thresh=0.05,
                **spec.transform_kwargs())


def ssd_scales(strides: list[int], image_size: int) -> list[float]:
    """Default-box scales (fractions of the image) for pyramid levels: 2 x stride per level, one
    more for the last level's second box. torchvision's 0.2 ... 0.95 suits 300-px SSD on COCO
    objects; at strides 8 ... 32 of a 512-px image it would make the smallest box 100 px."""
    sizes = [2 * s for s in strides] + [4 * strides[-1]]
    return [min(1.0, v / image_size) for v in sizes]


@register_detection_head("ssdlite", background=True)
def ssdlite(spec: DetectorInputs) -> nn.Module:
    """torchvision SSD with the SSDlite head (depthwise-separable 3x3 convolutions) over the FPN;
    the image is resized to a fixed `image_size` square, as SSD does."""
    body, strides = _pyramid_with_extra(spec)
    boxes = DefaultBoxGenerator([[2, 3] for _ in strides], scales=ssd_scales(strides, spec.image_size),
                                steps=strides)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)   # torchvision's ssdlite320 settings
    head = SSDLiteHead([spec.fpn_channels] * len(strides), boxes.num_anchors_per_location(),
                       spec.num_classes + 1, norm)
    pre = spec.backbone.preprocessing
    return SSD(body, boxes, (spec.image_size, spec.image_size), spec.num_classes + 1,
               image_mean=list(pre.mean), image_std=list(pre.std), head=head, score_thresh=0.01,
               detections_per_img=100, topk_candidates=300)
