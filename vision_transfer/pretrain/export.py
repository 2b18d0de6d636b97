"""`RUN/backbone.safetensors`: the pretrained backbone as a plain state dict every task loads.

Keys are the registry backbone's network's own (`conv_stem.weight`, `blocks.0.0.conv_dw.weight`,
... for EfficientNet-Lite; torchvision's names for torchvision families), i.e. the backbone's
`state_dict()` without its `body.` prefix, so `model.weights=FILE` loads it for every task and
strategy, `vt embed --weights FILE` too, and timm / torchvision load it with `strict=False`.
The safetensors metadata (str -> str) carries what the file was trained with:

    format "vision_transfer/backbone/1", backbone, preprocessing (JSON of `Preprocessing`),
    image_size, method, start_weights, epochs, images
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..backbones.base import Backbone
from ..files import atomic_path

BACKBONE_FORMAT = "vision_transfer/backbone/1"


def backbone_state(backbone: Backbone) -> dict:
    """The backbone's tensors under the wrapped network's names (contiguous CPU copies)."""
    sd = backbone.state_dict()
    if all(k.startswith("body.") for k in sd):
        sd = {k[5:]: v for k, v in sd.items()}
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_backbone(backbone: Backbone, path: str | os.PathLike, *, image_size: int, **info: object) -> Path:
    """Write `path` atomically; `info` (method, start_weights, ...) goes into the metadata as text."""
    from safetensors.torch import save_file

    meta = {"format": BACKBONE_FORMAT, "backbone": backbone.name,
            "preprocessing": json.dumps(backbone.preprocessing.to_dict()), "image_size": str(image_size),
            **{k: str(v) for k, v in info.items()}}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(backbone_state(backbone), str(tmp), metadata=meta)
    return path
