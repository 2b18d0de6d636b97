"""Segmentation models: a registry backbone, a decoder over its feature maps, logits at input size.

The decoder reads only the backbone's `feature_info` (channels and stride of each map), so any
registered backbone works with any head:

- `unet` (default): segmentation-models-pytorch's `UnetDecoder` + `SegmentationHead`. smp 0.6's
  decoder takes a list whose first entry sits at the input resolution and drops it (smp's own
  encoders put the image there); we pass a zero-channel placeholder of the input's size, so the
  last block lands at full resolution. A backbone with a stride-1 map (vgg) uses it as a skip.
- `fpn`, `deeplabv3plus`: smp's `FPNDecoder` / `DeepLabV3PlusDecoder` on the maps at strides
  4, 8, 16, 32 (DeepLabV3+: stride 4 and the deepest map, atrous rates halved at stride 32).
- `fcn`, `deeplabv3`: torchvision's `FCNHead` / `DeepLabHead` on the deepest map.

Inputs of any size work: the model pads to a multiple of the deepest stride, and crops the
logits back. Custom decoders register with `@SEGMENTATION_HEADS.register("name")` as builders
`f(*, feature_info, num_classes, **options) -> nn.Module` whose `forward(features)` returns
logits `(N, num_classes, h, w)` at any resolution (upsampled bilinearly to the input).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vision_transfer.backbones.base import Backbone, FeatureInfo
from vision_transfer.errors import VTError
from vision_transfer.registry import Registry

SEGMENTATION_HEADS: Registry[Callable[..., nn.Module]] = Registry("segmentation head")


class SizedDecoder(nn.Module):
    """Built-in decoders: `forward(features, size) -> logits`, `size` = padded input (H, W)."""

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError


class SegmentationModel(nn.Module):
    """`forward(x (N, 3, H, W)) -> logits (N, num_classes, H, W)` for any H, W."""

    def __init__(self, backbone: Backbone, decoder: nn.Module, *, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.decoder, self.num_classes = backbone, decoder, num_classes
        self.pad_to = max(f.stride for f in backbone.feature_info)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.pad_to, -w % self.pad_to
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        size = (h + ph, w + pw)
        feats = self.backbone(x)
        out = self.decoder(feats, size) if isinstance(self.decoder, SizedDecoder) else self.decoder(feats)
        if tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out[..., :h, :w]


def default_decoder_channels(n_blocks: int) -> list[int]:
    """smp's (256, 128, 64, 32, 16) for five blocks; halving, never below 16, for other depths."""
    return [max(16, 256 >> i) for i in range(n_blocks)]


def _resize_to(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A map of a backbone whose strides are not exact (alexnet) brought to its nominal size."""
    return t if tuple(t.shape[-2:]) == hw else F.interpolate(t, size=hw, mode="bilinear", align_corners=False)


@SEGMENTATION_HEADS.register("unet")
class UnetHead(SizedDecoder):
    def __init__(self, *, feature_info: Sequence[FeatureInfo], num_classes: int,
                 decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        chans = [f.channels for f in feature_info]
        self.first_is_full = feature_info[0].stride == 1
        n_blocks = len(chans) - 1 if self.first_is_full else len(chans)
        if n_blocks < 1:
            raise VTError("model.head=unet needs at least two feature maps when the first is at stride 1")
        decoder_channels = list(decoder_channels or default_decoder_channels(n_blocks))
        if len(decoder_channels) != n_blocks:
            raise VTError(f"model.decoder_channels has {len(decoder_channels)} values but this backbone's "
                          f"{len(chans)} maps (strides {[f.stride for f in feature_info]}) need {n_blocks}")
        self.decoder = UnetDecoder(encoder_channels=[0, *chans], decoder_channels=decoder_channels,
                                   n_blocks=n_blocks)
        self.head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        initialize_decoder(self.decoder)
        initialize_head(self.head)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        ref = features[0]
        placeholder = ref.new_zeros(ref.shape[0], 0, *size)   # only its spatial size is used
        return self.head(self.decoder([placeholder, *features]))


def _maps_at(feature_info: Sequence[FeatureInfo], strides: Sequence[int], head: str) -> list[int]:
    """Index of the deepest map at each wanted stride."""
    have = {f.stride: i for i, f in enumerate(feature_info)}
    missing = [s for s in strides if s not in have]
    if missing:
        raise VTError(f"model.head={head} needs feature maps at strides {list(strides)}; this backbone gives "
                      f"{sorted(have)} (use model.head=unet, which works with any strides)")
    return [have[s] for s in strides]


@SEGMENTATION_HEADS.register("fpn")
class FPNHead(SizedDecoder):
    strides = (4, 8, 16, 32)

    def __init__(self, *, feature_info: Sequence[FeatureInfo], num_classes: int, **_: object) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

        self.index = _maps_at(feature_info, self.strides, "fpn")
        chans = [feature_info[i].channels for i in self.index]
        self.decoder = FPNDecoder(encoder_channels=chans, encoder_depth=3)
        self.head = SegmentationHead(self.decoder.out_channels, num_classes, kernel_size=1, upsampling=4)
        initialize_decoder(self.decoder)
        initialize_head(self.head)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        maps = [_resize_to(features[i], (size[0] // s, size[1] // s)) for i, s in zip(self.index, self.strides)]
        return self.head(self.decoder(maps))


@SEGMENTATION_HEADS.register("deeplabv3plus")
class DeepLabV3PlusHead(SizedDecoder):
    def __init__(self, *, feature_info: Sequence[FeatureInfo], num_classes: int, **_: object) -> None:
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

        self.deep = len(feature_info) - 1
        self.deep_stride = feature_info[-1].stride
        self.high = _maps_at(feature_info, (4,), "deeplabv3plus")[0]
        if self.deep_stride <= 4:
            raise VTError("model.head=deeplabv3plus needs a map deeper than stride 4")
        rates = (12, 24, 36) if self.deep_stride <= 16 else (6, 12, 18)
        chans = [0, 0, feature_info[self.high].channels, feature_info[-1].channels]
        self.decoder = DeepLabV3PlusDecoder(encoder_channels=chans, encoder_depth=5, out_channels=256,
                                            atrous_rates=rates, output_stride=16, aspp_separable=True,
                                            aspp_dropout=0.5)
        self.decoder.up = nn.Upsample(scale_factor=self.deep_stride // 4, mode="bilinear", align_corners=True)
        self.head = SegmentationHead(256, num_classes, kernel_size=1, upsampling=4)
        initialize_decoder(self.decoder)
        initialize_head(self.head)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        high = _resize_to(features[self.high], (size[0] // 4, size[1] // 4))
        deep = _resize_to(features[self.deep], (size[0] // self.deep_stride, size[1] // self.deep_stride))
        return self.head(self.decoder([None, None, high, deep]))


class _TorchvisionHead(SizedDecoder):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.head(features[-1]), size=size, mode="bilinear", align_corners=False)


@SEGMENTATION_HEADS.register("fcn")
def fcn(*, feature_info: Sequence[FeatureInfo], num_classes: int, **_: object) -> nn.Module:
    """torchvision's FCN head (3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 conv)."""
    from torchvision.models.segmentation.fcn import FCNHead

    return _TorchvisionHead(FCNHead(feature_info[-1].channels, num_classes))


@SEGMENTATION_HEADS.register("deeplabv3")
def deeplabv3(*, feature_info: Sequence[FeatureInfo], num_classes: int, **_: object) -> nn.Module:
    """torchvision's DeepLabV3 head (ASPP with rates 12, 24, 36) on the deepest map."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    return _TorchvisionHead(DeepLabHead(feature_info[-1].channels, num_classes))


def load_torchvision_head(decoder: nn.Module, *, head: str, backbone: str, weights: str) -> int:
    """Load the `classifier` of torchvision's `{head}_{backbone}` weights (e.g. fcn_resnet50,
    COCO with VOC labels) into a `fcn` / `deeplabv3` head; the last conv is kept when the class
    count differs. `weights`: "coco" (torchvision's default), a tag, or a file. Returns the
    number of tensors loaded. Offline without the file: a one-line error naming file and folder."""
    from torchvision.models import get_model_weights, list_models
    from torchvision.models import segmentation as tv_seg

    from vision_transfer.weights import load_state_dict_file, offline_error, torch_hub_checkpoint_dir

    if head not in ("fcn", "deeplabv3") or not isinstance(decoder, _TorchvisionHead):
        raise VTError(f"model.head_weights is for model.head=fcn or deeplabv3 (torchvision's heads), not {head}")
    name = f"{head}_{backbone}"
    if Path(weights).suffix in (".pt", ".pth", ".safetensors"):
        sd = load_state_dict_file(weights)
    else:
        valid = [m for m in list_models(module=tv_seg) if m.startswith(head + "_")]
        if name not in valid:
            raise VTError(f"torchvision has {head} weights only for {', '.join(valid)}; "
                          f"model.backbone={backbone} cannot use model.head_weights={weights}")
        enum = get_model_weights(name)
        try:
            w = enum.DEFAULT if weights in ("coco", "default") else enum[weights]
        except KeyError:
            raise VTError(f"unknown weights {weights!r} for {name}; valid: coco, "
                          f"{', '.join(x.name for x in enum)}, or a file") from None
        path = torch_hub_checkpoint_dir() / w.url.rsplit("/", 1)[-1]
        if not path.is_file():
            raise offline_error(f"torchvision weights {w} of {name}", w.url, path.name, path.parent)
        sd = load_state_dict_file(path)
    own = decoder.head.state_dict()
    found = {k.removeprefix("classifier."): v for k, v in sd.items() if k.startswith("classifier.")}
    fit = {k: v for k, v in found.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise VTError(f"the weights {weights} hold no {head} head tensors that fit (expected classifier.* keys)")
    decoder.head.load_state_dict(fit, strict=False)
    return len(fit)


def build_segmentation_model(*, backbone: Backbone, num_classes: int, head: str | nn.Module | Callable = "unet",
                             decoder_channels: Sequence[int] | None = None,
                             head_weights: str | None = None) -> SegmentationModel:
    """Backbone + decoder. `head`: a registered name, a module (`forward(features) -> logits`)
    or a builder `f(*, feature_info, num_classes, decoder_channels) -> module`. `head_weights`:
    torchvision's weights for the `fcn` / `deeplabv3` heads (see `load_torchvision_head`)."""
    if num_classes < 1:
        raise VTError(f"a segmentation model needs at least one class, got {num_classes}")
    if isinstance(head, nn.Module):
        decoder = head
    else:
        builder = SEGMENTATION_HEADS.get(head) if isinstance(head, str) else head
        decoder = builder(feature_info=list(backbone.feature_info), num_classes=num_classes,
                          decoder_channels=decoder_channels)
    if head_weights and not (isinstance(head, str) and head in ("fcn", "deeplabv3")):
        raise VTError(f"model.head_weights is for model.head=fcn or deeplabv3 (torchvision's heads), not {head}")
    model = SegmentationModel(backbone, decoder, num_classes=num_classes)
    # loaded when training starts (Task.prepare_training), not when a checkpoint is rebuilt
    model.head_weights = (str(head), head_weights) if head_weights else None
    return model
