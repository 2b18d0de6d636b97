"""torchvision classification networks as backbones.

Each family names the sequential feature path of its network; `group_by_resolution` splits it
into stages wherever the resolution drops, so strides and channels are measured, not hard-coded.
The classifier is removed; the rest keeps torchvision's own parameter names under `body.`, so
a torchvision state dict loads as it is.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..errors import VTError
from ..weights import WeightsRequest, load_state_dict_file, offline_error, torch_hub_checkpoint_dir
from .base import Backbone, Preprocessing, group_by_resolution


def _resnet(m: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu)
    return [stem, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]


def _features(m: nn.Module) -> list[nn.Module]:
    return list(m.features.children())


def _densenet(m: nn.Module) -> list[nn.Module]:
    # torchvision applies the final ReLU in forward(), after features.norm5
    return list(m.features.children()) + [nn.ReLU(inplace=False)]


def _regnet(m: nn.Module) -> list[nn.Module]:
    return [m.stem, *m.trunk_output.children()]


FAMILIES: dict[str, tuple[Callable[[nn.Module], list[nn.Module]], Sequence[str]]] = {
    "alexnet": (_features, ["alexnet"]),
    "vgg": (_features, [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]),
    "resnet": (_resnet, ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                         "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2"]),
    "densenet": (_densenet, ["densenet121", "densenet161", "densenet169", "densenet201"]),
    "efficientnet": (_features, [f"efficientnet_b{i}" for i in range(8)]
                     + ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]),
    "mobilenet": (_features, ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]),
    "convnext": (_features, ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"]),
    "regnet": (_regnet, ["regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf"]),
}


def _resolve_tv_weights(name: str, req: WeightsRequest):
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    if req.kind == "imagenet":
        return enum.DEFAULT
    try:
        return enum[req.value]
    except KeyError:
        tags = [w.name for w in enum]
        raise VTError(f"unknown weights tag {req.value!r} for {name}; valid: imagenet, {', '.join(tags)}, none, "
                      "or a weights file") from None


def tv_weights_file(name: str, req: WeightsRequest):
    """(weights enum, local file path) of torchvision weights; the file may not exist yet."""
    w = _resolve_tv_weights(name, req)
    return w, torch_hub_checkpoint_dir() / w.url.rsplit("/", 1)[-1]


def _preprocessing(w) -> Preprocessing:
    if w is None:
        return Preprocessing()
    t = w.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return Preprocessing(mean=tuple(t.mean), std=tuple(t.std), input_size=crop,
                         crop_pct=round(crop / resize, 4), interpolation=t.interpolation.value)


def _download_state_dict(name: str, req: WeightsRequest):
    import torch

    w, path = tv_weights_file(name, req)
    if not path.is_file():
        try:
            torch.hub.download_url_to_file(w.url, str(path), progress=True)
        except Exception:  # noqa: BLE001 - offline, proxy, DNS...: one clear line instead
            path.unlink(missing_ok=True)
            raise offline_error(f"torchvision weights {w} of {name}", w.url, path.name, path.parent) from None
    return w, load_state_dict_file(path)


class TorchvisionBackbone(Backbone):
    family = "torchvision"

    def __init__(self, name: str, *, weights: WeightsRequest, out_indices: Sequence[int] | None = None,
                 family: str = "torchvision") -> None:
        super().__init__()
        import torchvision.models as tvm

        self.name, self.family = name, family
        body = tvm.get_model(name, weights=None)
        for attr in ("fc", "classifier"):  # the ImageNet classifier is not part of a backbone
            if hasattr(body, attr):
                setattr(body, attr, nn.Identity())
        self.body = body
        tv_weights = None
        if weights.kind in ("imagenet", "tag"):
            tv_weights, sd = _download_state_dict(name, weights)
            load_matching(self, sd, source=str(tv_weights))
        elif weights.kind == "file":
            load_matching(self, load_state_dict_file(weights.value), source=weights.value)
        elif weights.kind == "hub":
            raise VTError(f"hf-hub weights are for timm models: use model.backbone=timm/<name> instead of {name}")
        self.weights = str(weights)
        self.preprocessing = _preprocessing(tv_weights or _resolve_tv_weights(name, WeightsRequest("imagenet")))
        stages, infos = group_by_resolution(FAMILIES[family][0](body))
        self._finish(stages, infos, out_indices)


def load_matching(backbone: nn.Module, sd: dict, *, source: str) -> None:
    """Load a state dict whose keys are the backbone's own (`body.x`) or the bare network's (`x`);
    classifier weights in the file are ignored, any other mismatch is an error."""
    fresh = [n + "." for n, m in backbone.named_modules() if any(m is x for x in getattr(backbone, "new_modules", ()))]
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith(tuple(fresh) or ("\0",))}
    if not any(k in own for k in sd):
        sd = {"body." + k: v for k, v in sd.items()}
    if not any(k in own for k in sd):
        sd = {k.replace("backbone.", "", 1): v for k, v in sd.items()}
    missing = [k for k in own if k not in sd]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        bad = (missing + wrong)[0]
        raise VTError(f"weights {source} do not fit {getattr(backbone, 'name', 'the backbone')}: "
                      f"{len(missing)} missing and {len(wrong)} mis-shaped tensors (first: {bad}); "
                      "were they saved from another architecture?")
    # strict on everything pretrained; new modules (a ViT's pyramid) keep their initialisation
    backbone.load_state_dict({k: sd[k] for k in own}, strict=not fresh)


def make_builder(name: str, family: str):
    def build(*, weights: WeightsRequest, out_indices: Sequence[int] | None = None) -> Backbone:
        return TorchvisionBackbone(name, weights=weights, out_indices=out_indices, family=family)

    build.__name__ = name
    return build
