"""What a task hands the exporter: `ExportSpec`, and the default for tensor-in, tensor-out models.

Two graph layouts:

- `io="batch"` (classification, segmentation): one input `images` `(N, 3, S, S)` float, already
  normalised with the backbone's mean / std; one output `logits` (`(N, C)` or `(N, C, S, S)`).
  `dynamic=True` makes N free.
- `io="per_image"` (detection): one input `image` `(3, H, W)` float RGB in [0, 1] at any size;
  outputs `boxes` `(K, 4)` xyxy in the input's pixels, `scores` `(K,)`, `labels` `(K,)` int64 from
  0, after NMS. torchvision's detectors export one image per run (their resize and NMS are
  per image), so a batch is a loop over images; `dynamic=True` makes H and W free.

A task that needs more than the default defines `export_spec(model, *, meta, image_size, batch,
dynamic) -> ExportSpec` on its Task class; the exporter looks for it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones.base import Preprocessing
from ..data.synthetic import make_scene
from ..errors import VTError


@dataclass
class ExportSpec:
    """The module to export, example inputs and how to compare outputs."""

    module: nn.Module                          # forward(*inputs) -> Tensor | tuple[Tensor, ...]
    inputs: tuple[torch.Tensor, ...]           # example inputs at the export's shape
    input_names: list[str]
    output_names: list[str]
    io: str                                    # "batch" | "per_image"
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)   # per output: largest allowed abs diff
    # further inputs to check parity on (another batch or image size when dynamic)
    other_inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    extra_meta: dict[str, Any] = field(default_factory=dict)    # written into the sidecar JSON
    # (PyTorch outputs, exported outputs) -> largest difference per output; None: element-wise
    compare: Callable[[list[torch.Tensor], list[torch.Tensor]], dict[str, float]] | None = None


def scene_images(n: int, size: int, *, seed: int = 0) -> list[np.ndarray]:
    """`n` generated `(size, size, 3)` uint8 scenes: inputs with edges and flat areas, unlike noise."""
    return [make_scene(seed=seed + i, size=size, max_objects=3, min_radius=max(3, size // 16))["image"]
            for i in range(n)]


def normalised_batch(images: list[np.ndarray], pre: Preprocessing) -> torch.Tensor:
    """`(N, 3, S, S)` float: uint8 RGB images scaled to [0, 1], then `(x - mean) / std`."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x - mean) / std


def tensor_export_spec(model: nn.Module, *, meta: dict, image_size: int, batch: int, dynamic: bool,
                       tolerance: float = 1e-4) -> ExportSpec:
    """The default: `images (N, 3, S, S)` normalised -> `logits`, N free when `dynamic`."""
    check_image_size(model, image_size, stride=_max_stride(model))
    pre = Preprocessing.from_dict(meta["preprocessing"])
    x = normalised_batch(scene_images(batch, image_size), pre)
    others = [(normalised_batch(scene_images(batch + 2, image_size, seed=50), pre),)] if dynamic else []
    return ExportSpec(module=model, inputs=(x,), input_names=["images"], output_names=["logits"], io="batch",
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else {},
                      tolerance={"logits": tolerance}, other_inputs=others,
                      extra_meta={"input_layout": "images (N, 3, S, S) float RGB in [0, 1], then (x - mean) / std"})


def check_image_size(model: nn.Module, image_size: int, *, stride: int,
                     run: Callable[[torch.Tensor], Any] | None = None) -> None:
    """A one-line error when the model cannot take `image_size` x `image_size` inputs."""
    hint = f"use a multiple of {stride}, e.g. {max(stride, round(image_size / stride) * stride)}"
    if image_size < stride:   # the deepest map would be under one pixel: padding, not the image
        raise VTError(f"--image-size {image_size}: smaller than the backbone's deepest stride {stride}; {hint}")
    try:
        with torch.inference_mode():
            (run or model)(torch.zeros(1, 3, image_size, image_size))
    except Exception as e:  # noqa: BLE001 - any failure here means this size does not fit the model
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise VTError(f"--image-size {image_size}: the model cannot take {image_size}x{image_size} inputs "
                      f"({type(e).__name__}: {first}); {hint}") from None


def _max_stride(model: nn.Module) -> int:
    from ..task import find_backbone

    try:
        return max(f.stride for f in find_backbone(model).feature_info)
    except TypeError:
        return 32
