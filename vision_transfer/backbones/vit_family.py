"""Foundation-model backbones through timm: plain ViTs (DINOv2, CLIP, SigLIP, EVA-02, DeiT, the SAM
image encoder) behind a simple feature pyramid, and hierarchical networks (Swin, ConvNeXt V2).

Contract, the same as for CNNs:
- `forward(x: (N, 3, H, W)) -> list[Tensor]` shallow to deep. A plain ViT returns ViTDet levels
  at strides 4/8/16/32 (`pyramid.py`) with channels C/4, C/2, C, C; Swin its four stages
  (strides 4..32, NCHW; timm works in NHWC inside).
- `stages`: a plain ViT has one stage per transformer block after the embedding stage (patch
  embedding, class/register tokens, position embedding), so `transfer.freeze_layers=k` freezes the
  embedding and k-1 blocks, and `transfer.layer_lr_decay` is the BEiT/MAE per-block decay
  (0.65-0.75 for ViT-B). Swin has four stages (patch embedding inside the first).
- Sizes: position embeddings are resampled for any input (timm's `dynamic_img_size`). Every plain
  ViT is run at an effective stride of 16: the image is resized to (H/16) x (W/16) patches of its
  patch size (a patch-14 DINOv2 at 224 px sees 196 px, 14 x 14 tokens), so heads and decoders see
  the strides they expect. A size that is not a multiple of 16 is resized up to the next multiple
  of 16 per side, with a one-line note (never a shape error).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import VTError
from ..weights import WeightsRequest
from .base import Backbone, FeatureInfo, normalise_out_indices
from .pyramid import STRIDES, SimpleFeaturePyramid, pyramid_channels

# timm's modules of a ViT that come after the blocks: they follow the last stage
_AFTER_BLOCKS = ("norm", "fc_norm", "head", "head_drop", "attn_pool", "neck")
STRIDE = 16


class _Group(nn.Module):
    """Holds modules and parameters of the timm model under new names so that `parameters()` of a
    stage is exactly what it freezes. Not registered in the backbone: the timm model owns them."""

    def __init__(self, items: Sequence[tuple[str, nn.Module | nn.Parameter]]) -> None:
        super().__init__()
        for name, item in items:
            key = name.replace(".", "_")
            if isinstance(item, nn.Parameter):
                self.register_parameter(key, item)
            else:
                self.add_module(key, item)


def _embedding_stage(vit: nn.Module) -> _Group:
    items: list[tuple[str, nn.Module | nn.Parameter]] = []
    for name, child in vit.named_children():
        if name != "blocks" and name not in _AFTER_BLOCKS:
            items.append((name, child))
    for name, p in vit.named_parameters(recurse=False):
        items.append((name, p))
    return _Group(items)


def _create(timm_name: str, weights: WeightsRequest, kwargs: dict) -> nn.Module:
    """The timm model with pretrained weights from the hub (cached) or random init; head removed."""
    from .timm_family import _hub_cached, _hub_reachable
    from ..weights import offline_error

    import timm

    base = timm_name.split(".")[0]
    target = weights.value if weights.kind == "hub" else timm_name
    if weights.kind == "tag":
        target = f"{base}.{weights.value}"
    pretrained = weights.kind in ("imagenet", "tag", "hub")
    if pretrained and not _hub_cached(target) and not _hub_reachable():
        raise offline_error(f"timm weights of {target}", None, "model.safetensors and config.json",
                            _hf_folder(target))
    try:
        model = timm.create_model(target, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained:
            raise offline_error(f"timm weights of {target}", None, "model.safetensors and config.json",
                                _hf_folder(target)) from None
        raise VTError(f"timm cannot build {target}: {str(e).splitlines()[0][:200]}") from None
    try:
        model.reset_classifier(0, "")
    except (TypeError, ValueError, AssertionError):
        model.reset_classifier(0)
    return model


def _hf_folder(target: str) -> str:
    try:
        from huggingface_hub import constants
        from timm.models import get_pretrained_cfg

        repo = target.split(":", 1)[1] if target.startswith("hf-hub:") else \
            getattr(get_pretrained_cfg(target), "hf_hub_id", None) or target
        return f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}"
    except Exception:  # noqa: BLE001 - only for the message
        return "the Hugging Face cache (HF_HOME)"


def _load_file(backbone: Backbone, weights: WeightsRequest) -> None:
    if weights.kind == "file":
        from ..weights import load_state_dict_file
        from .timm_family import _drop_head
        from .torchvision_family import load_matching

        load_matching(backbone, _drop_head(load_state_dict_file(weights.value), backbone), source=weights.value)


class ViTBackbone(Backbone):
    """A plain timm ViT (VisionTransformer, Eva, SAM's ViT) with the ViTDet simple feature pyramid.

    `out_indices` pick pyramid levels (0..3 = strides 4/8/16/32); only those run."""

    family = "vit"

    def __init__(self, timm_name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None,
                 registry_name: str | None = None, **model_kwargs) -> None:
        super().__init__()
        self.name = registry_name or timm_name
        self.body = _create(timm_name, weights, model_kwargs)
        self.patch = int(_pair(self.body.patch_embed.patch_size)[0])
        dim = _probe_channels(self.body, self.patch)
        self.pyramid = SimpleFeaturePyramid(dim)
        self.new_modules = (self.pyramid,)   # never pretrained: trains with the head under every strategy
        self._levels = [FeatureInfo(channels=c, stride=s, stage=i)
                        for i, (c, s) in enumerate(zip(pyramid_channels(dim), STRIDES))]
        self._noted: set[tuple[int, int]] = set()
        _load_file(self, weights)
        self.weights = str(weights)
        from .timm_family import _preprocessing

        self.preprocessing = _preprocessing(self.body.pretrained_cfg)
        self._stages = (_embedding_stage(self.body), *self.body.blocks)
        self._stage_info = tuple(self._levels)
        self.out_indices = normalise_out_indices(out_indices, len(self._levels), self.name)

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return [self._levels[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._to_token_grid(x)
        last = self.body.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW",
                                               intermediates_only=True)[-1]
        return self.pyramid(last, self.out_indices)

    def _to_token_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Resize so that the patch grid is ceil(H/16) x ceil(W/16): an effective stride of 16."""
        h, w = x.shape[-2:]
        gh, gw = math.ceil(h / STRIDE), math.ceil(w / STRIDE)
        size = (gh * self.patch, gw * self.patch)
        if (h, w) == size:
            return x
        if (h % STRIDE or w % STRIDE) and (h, w) not in self._noted:
            self._noted.add((h, w))
            from ..engine.logging import console

            console.print(f"[dim]note: {self.name} works at stride 16: {h}x{w} runs as {gh * STRIDE}x{gw * STRIDE} "
                          f"(train.image_size={max(gh, gw) * STRIDE} avoids this)[/dim]")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


class HierarchicalBackbone(Backbone):
    """A hierarchical timm network with `forward_intermediates` (Swin, ConvNeXt V2): four stages at
    strides 4/8/16/32 (the stem inside the first), NCHW out (timm's Swin works in NHWC inside)."""

    family = "swin"

    def __init__(self, timm_name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None,
                 registry_name: str | None = None, family: str = "swin", **model_kwargs) -> None:
        super().__init__()
        self.name, self.family = registry_name or timm_name, family
        self.body = _create(timm_name, weights, model_kwargs)
        layers = list(self.body.layers if hasattr(self.body, "layers") else self.body.stages)
        stem_name = "patch_embed" if hasattr(self.body, "patch_embed") else "stem"
        first = _Group([(stem_name, getattr(self.body, stem_name)), ("stage_0", layers[0])])
        infos = [FeatureInfo(channels=f["num_chs"], stride=f["reduction"], stage=i)
                 for i, f in enumerate(self.body.feature_info)]
        _load_file(self, weights)
        self.weights = str(weights)
        from .timm_family import _preprocessing

        self.preprocessing = _preprocessing(self.body.pretrained_cfg)
        self._finish([first, *layers[1:]], infos, out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if self.family == "swin" and (h % 32 or w % 32):   # patch merging halves the grid four times
            raise VTError(f"{self.name} needs image sizes that are multiples of 32, got {h}x{w}: "
                          f"set train.image_size={max(32, round(max(h, w) / 32) * 32)}")
        return self.body.forward_intermediates(x, indices=list(self.out_indices), norm=True,
                                               output_fmt="NCHW", intermediates_only=True)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _probe_channels(vit: nn.Module, patch: int) -> int:
    """Channels of the final map (embed_dim, or SAM's 256-channel neck), from one tiny forward."""
    was = vit.training
    vit.eval()
    with torch.no_grad():
        out = vit.forward_intermediates(torch.zeros(1, 3, 2 * patch, 2 * patch), indices=1, norm=True,
                                        output_fmt="NCHW", intermediates_only=True)[-1]
    vit.train(was)
    return int(out.shape[1])
