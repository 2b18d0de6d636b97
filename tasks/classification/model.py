"""The classification model: a registry backbone and a head on its deepest feature map."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vision_transfer.backbones.base import Backbone
from vision_transfer.engine.losses import ClassificationLoss, MultiLabelLoss
from vision_transfer.errors import VTError

from .heads import HEADS, PooledHead, StagePooledHead


class Classifier(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module, *, label_smoothing: float = 0.0,
                 criterion: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.label_smoothing = backbone, head, label_smoothing
        self.head_args: dict = {}   # how build_classifier made the head: lets use_stages rebuild it
        self.criterion = criterion   # None: plain cross-entropy with label_smoothing
        self.multilabel = False      # True: one sigmoid per class (data.multilabel), criterion MultiLabelLoss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, 3, H, W)` normalised images -> `(N, num_classes)` logits."""
        maps = self.backbone(x)
        return self.head(maps if getattr(self.head, "takes_all_maps", False) else maps[-1])

    def use_stages(self, stages: list[int]) -> None:
        """A new head of the same kind on the pooled maps of `stages` (the deepest alone: a plain head)."""
        args = self.head_args
        if not args or not isinstance(args.get("head"), str):
            raise VTError("transfer.probe_layers needs a registered head (model.head=linear or mlp), "
                          "not a custom module")
        self.head = _head_on_stages(self.backbone, stages, num_classes=args["num_classes"], head=args["head"],
                                    options=args["options"]).to(next(self.head.parameters()).device)


def make_head(head: str | nn.Module | Callable, *, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """A head from a registered name, a module (used as is) or a builder callable."""
    if isinstance(head, nn.Module):
        return head
    builder = HEADS.get(head) if isinstance(head, str) else head
    if not callable(builder):
        raise VTError(f"model.head must be a registered name ({', '.join(HEADS.list())}), a module or a callable")
    return builder(in_channels=in_channels, num_classes=num_classes, **options)


def _head_on_stages(backbone: Backbone, stages: list[int] | None, *, num_classes: int, head: Any,
                    options: dict) -> nn.Module:
    """The head on the deepest map, or (several stages) a StagePooledHead over their pooled maps;
    `backbone.out_indices` grows to include `stages`."""
    last = len(backbone.stages) - 1
    if not stages or list(stages) == [last]:
        return make_head(head, in_channels=backbone.num_features, num_classes=num_classes, **options)
    backbone.out_indices = tuple(sorted({*backbone.out_indices, *stages}))
    channels = sum(backbone.stage_info[s].channels for s in stages)
    inner = make_head(head, in_channels=channels, num_classes=num_classes, **options)
    if not isinstance(inner, PooledHead):
        raise VTError("transfer.probe_layers needs a pooled head (linear or mlp)")
    return StagePooledHead(inner.classifier, positions=[backbone.out_indices.index(s) for s in stages],
                           stages=list(stages))


def build_classifier(*, backbone: Backbone, num_classes: int, head: Any = "linear", dropout: float = 0.0,
                     hidden_dim: int | None = None, label_smoothing: float = 0.0,
                     probe_layers: list[int] | None = None, loss: str = "ce",
                     class_weights: list[float] | None = None, focal_gamma: float = 2.0, multilabel: bool = False,
                     **_: Any) -> Classifier:
    """`probe_layers`: stage numbers whose pooled maps the head reads (None: the deepest map);
    `loss`: ce | focal, with `class_weights` (None: plain cross-entropy with label smoothing);
    `multilabel`: the logits are read one sigmoid per class, trained with binary cross-entropy."""
    if num_classes < (1 if multilabel else 2):
        raise VTError(f"classification needs at least 2 classes, got {num_classes}")
    if multilabel and (loss != "ce" or class_weights is not None):
        raise VTError("data.multilabel=true trains with binary cross-entropy: train.loss=focal and "
                      "train.class_weights are for single-label classification")
    if backbone.out_indices[-1] != len(backbone.stage_info) - 1:   # the deepest map (a ViT's maps are not its stages)
        backbone.out_indices = (*backbone.out_indices, len(backbone.stage_info) - 1)
    options = {"dropout": dropout, "hidden_dim": hidden_dim}
    h = _head_on_stages(backbone, probe_layers, num_classes=num_classes, head=head, options=options)
    criterion = None
    if loss != "ce" or class_weights is not None:
        criterion = ClassificationLoss(num_classes=num_classes, loss=loss, class_weights=class_weights,
                                       label_smoothing=label_smoothing, focal_gamma=focal_gamma)
    if multilabel:
        criterion = MultiLabelLoss(label_smoothing=label_smoothing)
    model = Classifier(backbone, h, label_smoothing=label_smoothing, criterion=criterion)
    model.multilabel = multilabel
    model.head_args = {"head": head, "num_classes": num_classes, "options": options}
    return model
