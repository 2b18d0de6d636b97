"""The classification model: a registry backbone and a head on its deepest feature map."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vision_transfer.backbones.base import Backbone
from vision_transfer.engine.losses import ClassificationLoss
from vision_transfer.errors import VTError

from .heads import HEADS


class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module, *, label_smoothing: float = 0.0,
                 criterion: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.label_smoothing = backbone, head, label_smoothing
        self.criterion = criterion   # None: plain cross-entropy with label_smoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, 3, H, W)` normalised images -> `(N, num_classes)` logits."""
        return self.head(self.backbone(x)[-1])


def make_head(head: str | nn.Module | Callable, *, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """A head from a registered name, a module (used as is) or a builder callable."""
    if isinstance(head, nn.Module):
        return head
    builder = HEADS.get("linear" if head == "default" else head) if isinstance(head, str) else head
    if not callable(builder):
        raise VTError(f"model.head must be a registered name ({', '.join(HEADS.list())}), a module or a callable")
    return builder(in_channels=in_channels, num_classes=num_classes, **options)


def build_classifier(*, backbone: Backbone, num_classes: int, head: Any = "linear", dropout: float = 0.0,
                     hidden_dim: int | None = None, label_smoothing: float = 0.0, loss: str = "ce",
                     class_weights: list[float] | None = None, focal_gamma: float = 2.0, **_: Any) -> Classifier:
    if num_classes < 2:
        raise VTError(f"classification needs at least 2 classes, got {num_classes}")
    if backbone.out_indices[-1] != len(backbone.stages) - 1:
        backbone.out_indices = (*backbone.out_indices, len(backbone.stages) - 1)
    h = make_head(head, in_channels=backbone.num_features, num_classes=num_classes, dropout=dropout,
                  hidden_dim=hidden_dim)
    criterion = None
    if loss != "ce" or class_weights is not None:
        criterion = ClassificationLoss(num_classes=num_classes, loss=loss, class_weights=class_weights,
                                       label_smoothing=label_smoothing, focal_gamma=focal_gamma)
    return Classifier(backbone, h, label_smoothing=label_smoothing, criterion=criterion)
