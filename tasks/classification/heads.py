"""Classification heads: pooled features -> logits.

A head builder takes `in_channels` (channels of the backbone's deepest map) and `num_classes`
and returns a module mapping `(N, C, H, W)` to `(N, num_classes)`. Built-in heads are a
`PooledHead` (global average pool, then a classifier on `(N, C)`), which is what lets a linear
probe train on cached pooled features.

    @register_head("cosine")
    def cosine_head(*, in_channels: int, num_classes: int, **_) -> nn.Module: ...
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vision_transfer.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("classification head")


class PooledHead(nn.Module):
    """Global average pooling, then `classifier` on the pooled `(N, C)` features."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def pool_map(self, x: torch.Tensor) -> torch.Tensor:
        """One map `(N, C, H, W)` -> `(N, C)`: what cached features hold, per stage."""
        return self.pool(x).flatten(1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


class StagePooledHead(PooledHead):
    """Pools the maps of several backbone stages, concatenates them and applies `classifier`:
    a probe on the layers that transfer best (`transfer.probe_layers`). Takes the whole list of
    maps the backbone returns; `positions` index that list, `stages` are the stage numbers."""

    takes_all_maps = True

    def __init__(self, classifier: nn.Module, *, positions: list[int], stages: list[int]) -> None:
        super().__init__(classifier)
        self.positions, self.stages = tuple(positions), tuple(stages)

    def pooled(self, maps: list[torch.Tensor]) -> torch.Tensor:   # type: ignore[override]
        return torch.cat([self.pool_map(maps[i]) for i in self.positions], 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:   # type: ignore[override]
        return self.classifier(self.pooled(maps))

    def extra_repr(self) -> str:
        return f"stages={list(self.stages)}"


@HEADS.register("linear")
def linear_head(*, in_channels: int, num_classes: int, dropout: float = 0.0, **_) -> nn.Module:
    layers = ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(in_channels, num_classes)]
    return PooledHead(nn.Sequential(*layers))


@HEADS.register("mlp")
def mlp_head(*, in_channels: int, num_classes: int, dropout: float = 0.0, hidden_dim: int | None = None,
             **_) -> nn.Module:
    hidden = hidden_dim or max(64, in_channels // 2)
    return PooledHead(nn.Sequential(nn.Linear(in_channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout), nn.Linear(hidden, num_classes)))
