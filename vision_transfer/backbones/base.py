"""The backbone contract every head relies on.

A `Backbone` maps an image batch `(N, 3, H, W)` to a list of feature maps, shallow to deep, and
describes itself as data:

- `feature_info`: one `FeatureInfo(channels, stride, stage)` per returned map;
- `stages`: the ordered blocks, stem first, for "freeze the first k" and "a learning rate per depth";
- `preprocessing`: mean, std, input size and interpolation of its weights;
- `num_features`: channels of the deepest map (what a pooled classifier head sees).

Heads read only these attributes, never a family's internals.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FeatureInfo:
    channels: int
    stride: int
    stage: int


@dataclass(frozen=True)
class Preprocessing:
    """How the backbone's weights expect images: RGB in [0, 1], then `(x - mean) / std`."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]), input_size=int(d["input_size"]),
                   crop_pct=float(d["crop_pct"]), interpolation=str(d["interpolation"]))


@dataclass
class BackboneSpec:
    """What rebuilds a backbone without its weights: stored in every checkpoint."""

    name: str
    weights: str | None = None
    out_indices: tuple[int, ...] | None = None
    extra: dict = field(default_factory=dict)


class Backbone(nn.Module):
    """Base class: subclasses set `body` (the wrapped network) and call `define_stages()`; or use
`StagedBackbone(stages)` for any module given as its ordered stages.

    The default `forward` runs `stages` in sequence; families whose stages are not sequential
    (timm's feature extractors) override `_forward_all`.
    """

    name: str = "backbone"
    family: str = "custom"

    def __init__(self) -> None:
        super().__init__()
        self._stages: tuple[nn.Module, ...] = ()
        self._stage_info: tuple[FeatureInfo, ...] = ()
        self.out_indices: tuple[int, ...] = ()
        self.preprocessing = Preprocessing()
        self.weights: str | None = None

    # -- contract -------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[nn.Module, ...]:
        return self._stages

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return [self._stage_info[i] for i in self.out_indices]

    @property
    def stage_info(self) -> list[FeatureInfo]:
        return list(self._stage_info)

    @property
    def num_features(self) -> int:
        return self.feature_info[-1].channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._forward_all(x)

    def _forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, last = [], max(self.out_indices)
        for i, stage in enumerate(self._stages[: last + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def spec(self) -> BackboneSpec:
        return BackboneSpec(name=self.name, weights=self.weights, out_indices=self.out_indices)

    # -- for subclasses -------------------------------------------------------------------------
    def define_stages(self, stages: Sequence[nn.Module], infos: Sequence[FeatureInfo] | None = None,
                      out_indices: Sequence[int] | None = None, *, probe: int = 64) -> None:
        """Record the ordered stages (not registered twice: `body` owns the parameters) and the
        output indices; `infos` (channels and stride per stage) are measured with one probe
        forward pass when not given."""
        self._stages = tuple(stages)
        self._stage_info = tuple(infos) if infos is not None else tuple(measure_stages(self._stages, probe=probe))
        self.out_indices = normalise_out_indices(out_indices, len(stages), self.name)

    _finish = define_stages   # the name the built-in families use

    def extra_repr(self) -> str:
        chans = [f.channels for f in self.feature_info]
        strides = [f.stride for f in self.feature_info]
        return f"name={self.name!r}, weights={self.weights!r}, channels={chans}, strides={strides}"


class StagedBackbone(Backbone):
    """Any network given as its ordered stages, stem first, each consuming the previous one's
    output: the few-line path to a custom backbone that every head and strategy accepts.

        stages = [nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU()), nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1))]
        bb = StagedBackbone(stages, name="tiny")      # feature_info measured: 16 ch @ 2, 32 ch @ 4

    `preprocessing` is what its weights expect (ImageNet mean/std by default)."""

    def __init__(self, stages: Sequence[nn.Module], *, name: str = "custom", out_indices: Sequence[int] | None = None,
                 preprocessing: Preprocessing | None = None, weights: str | None = None, probe: int = 64) -> None:
        super().__init__()
        self.name, self.weights = name, weights
        self.body = nn.ModuleList(stages)
        self.preprocessing = preprocessing or Preprocessing()
        self.define_stages(list(self.body), None, out_indices, probe=probe)


def measure_stages(stages: Sequence[nn.Module], *, probe: int = 64, in_chans: int = 3) -> list[FeatureInfo]:
    """Channels and stride of each stage's output, from one forward pass of a `probe`-pixel input."""
    infos = []
    x = torch.zeros(1, in_chans, probe, probe)
    was_training = [m.training for m in stages]
    with torch.no_grad():
        for i, m in enumerate(stages):
            m.eval()
            x = m(x)
            infos.append(FeatureInfo(channels=int(x.shape[1]), stride=2 ** round(math.log2(probe / x.shape[-1])),
                                     stage=i))
    for m, t in zip(stages, was_training):
        m.train(t)
    return infos


def normalise_out_indices(out_indices: Sequence[int] | None, n: int, name: str) -> tuple[int, ...]:
    from ..errors import VTError

    if out_indices is None:
        return tuple(range(n))
    idx = tuple(sorted({i + n if i < 0 else i for i in out_indices}))
    if not idx or idx[0] < 0 or idx[-1] >= n:
        raise VTError(f"out_indices {tuple(out_indices)} out of range for {name}, which has {n} stages (0..{n - 1})")
    return idx


def group_by_resolution(modules: Sequence[nn.Module], *, probe: int = 128,
                        in_chans: int = 3) -> tuple[list[nn.Module], list[FeatureInfo]]:
    """Group a sequential feature extractor into stages: a module that lowers the resolution
    starts a new stage. Channels and strides are measured with one probe forward pass."""
    sizes, chans = [], []
    was_training = [m.training for m in modules]
    x = torch.zeros(1, in_chans, probe, probe)
    with torch.no_grad():
        for m in modules:
            m.eval()
            x = m(x)
            sizes.append(x.shape[-1])
            chans.append(x.shape[1])
    for m, t in zip(modules, was_training):
        m.train(t)
    groups: list[list[nn.Module]] = []
    infos: list[FeatureInfo] = []
    prev = probe
    for m, s, c in zip(modules, sizes, chans):
        if s < prev or not groups:
            groups.append([])
            infos.append(FeatureInfo(channels=c, stride=0, stage=len(infos)))
        groups[-1].append(m)
        stride = 2 ** round(math.log2(probe / s))
        infos[-1] = FeatureInfo(channels=c, stride=stride, stage=len(infos) - 1)
        prev = s
    stages = [g[0] if len(g) == 1 else nn.Sequential(*g) for g in groups]
    return stages, infos
