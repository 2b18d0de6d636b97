"""Registry entries of the foundation-model families, named as timm names them.

One row per architecture: its family (`vit`, `swin`, `convnext`), the default weights tag (what
`model.weights=imagenet` means for it; other tags via `model.weights=TAG`) and the timm
keyword arguments it is built with. Weights come from the Hugging Face hub through timm; none
ship offline, so on an offline machine these build with `model.weights=none` (random init) or
from a cached/hub/file source.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..weights import WeightsRequest
from .base import Backbone

_DYN = {"dynamic_img_size": True}

# name: (family, default tag, timm kwargs)
FOUNDATION: dict[str, tuple[str, str, dict]] = {
    "vit_small_patch14_dinov2": ("vit", "lvd142m", _DYN),
    "vit_base_patch14_dinov2": ("vit", "lvd142m", _DYN),
    "vit_large_patch14_dinov2": ("vit", "lvd142m", _DYN),
    "vit_small_patch14_reg4_dinov2": ("vit", "lvd142m", _DYN),
    "vit_base_patch16_clip_224": ("vit", "openai", _DYN),
    "vit_base_patch32_clip_224": ("vit", "openai", _DYN),
    "vit_large_patch14_clip_224": ("vit", "openai", _DYN),
    "vit_base_patch16_siglip_224": ("vit", "webli", _DYN),
    "eva02_small_patch14_224": ("vit", "mim_in22k", _DYN),
    "eva02_base_patch14_224": ("vit", "mim_in22k", _DYN),
    "deit_tiny_patch16_224": ("vit", "fb_in1k", _DYN),
    "deit_small_patch16_224": ("vit", "fb_in1k", _DYN),
    "deit3_small_patch16_224": ("vit", "fb_in1k", _DYN),
    "samvit_base_patch16": ("vit", "sa1b", {}),
    "swin_tiny_patch4_window7_224": ("swin", "ms_in1k", _DYN),
    "swin_small_patch4_window7_224": ("swin", "ms_in22k_ft_in1k", _DYN),
    "swin_base_patch4_window7_224": ("swin", "ms_in22k_ft_in1k", _DYN),
    "convnextv2_atto": ("convnext", "fcmae_ft_in1k", {}),
    "convnextv2_nano": ("convnext", "fcmae_ft_in22k_in1k", {}),
    "convnextv2_tiny": ("convnext", "fcmae_ft_in22k_in1k", {}),
}

# weights whose licence forbids commercial use (a one-line warning when training on them)
NON_COMMERCIAL = ("cc-by-nc", "non-commercial", "noncommercial")


def build_foundation(name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None,
                     **overrides) -> Backbone:
    """The registry entry `name` as a Backbone; `overrides` go to timm (e.g. `depth=2` for tests)."""
    from .vit_family import HierarchicalBackbone, ViTBackbone

    family, tag, kwargs = FOUNDATION[name]
    if weights.kind == "imagenet":
        weights = WeightsRequest("tag", tag)
    if family == "vit":
        return ViTBackbone(name, weights=weights, out_indices=out_indices, registry_name=name, **kwargs, **overrides)
    return HierarchicalBackbone(name, weights=weights, out_indices=out_indices, registry_name=name, family=family,
                                **{**kwargs, **overrides})


def make_foundation_builder(name: str):
    def build(*, weights: WeightsRequest, out_indices: Sequence[int] | None = None) -> Backbone:
        return build_foundation(name, weights=weights, out_indices=out_indices)

    build.__name__ = name
    return build


def weights_licence(timm_name: str, tag: str | None = None) -> str | None:
    """The licence timm's pretrained_cfg records for `name.tag` (None where it records none)."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(f"{timm_name}.{tag}" if tag else timm_name)
        return getattr(cfg, "license", None) if cfg else None
    except Exception:  # noqa: BLE001 - unknown name: no licence known
        return None


def licence_warning(backbone_name: str, weights: str | None) -> str | None:
    """A one-line warning when the weights of a run are under a non-commercial licence."""
    if not weights or weights == "none" or backbone_name not in FOUNDATION:
        return None
    tag = FOUNDATION[backbone_name][1] if weights == "imagenet" else weights
    lic = weights_licence(backbone_name, tag)
    if lic and any(k in lic.lower() for k in NON_COMMERCIAL):
        return (f"warning: the {backbone_name}.{tag} weights are licensed {lic}: "
                "not for commercial use, nor the models trained from them")
    return None
