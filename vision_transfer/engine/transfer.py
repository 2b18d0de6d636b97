"""Transfer strategies: which backbone stages train, how BatchNorm behaves, and one learning rate
per depth.

Freezing is explicit and handles BatchNorm: a frozen stage has `requires_grad=False` *and* its
norm layers stay in eval mode across `model.train()` (see `train_mode`), so running statistics of
frozen layers never drift. `bn="frozen"` swaps in torchvision's `FrozenBatchNorm2d`.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import VTError
from ..task import find_backbone


STRATEGIES = ("linear_probe", "finetune", "gradual_unfreeze", "lp_ft")
BN_MODES = ("train", "eval", "frozen")

# lp_ft's fine-tune phase runs at this fraction of every group's learning rate. Why lower: after
# the probe the head already fits the features, so large steps are no longer needed to fix a random
# head, and it is exactly large early steps that distort pretrained features (Kumar et al. 2022,
# "Fine-Tuning can Distort Pretrained Features"; their LP-FT sweeps pick fine-tune lrs ~10x below
# those of plain fine-tuning).
LP_FT_LR_MULT = 0.1


@dataclass(frozen=True)
class TransferPlan:
    strategy: str
    frozen_stages: int        # the first k backbone stages are frozen
    bn: str                   # "train" | "eval" | "frozen"
    lr_scale: float = 1.0     # a factor on every group's learning rate in this phase


def plan_transfer(*, strategy: str, num_stages: int, freeze_layers: int = 0, bn: str | None = None,
                  epoch: int = 0, unfreeze_every: int = 1, unfreeze_milestones: list[int] | None = None,
                  probe_epochs: int | None = None, finetune_lr_mult: float = LP_FT_LR_MULT) -> TransferPlan:
    """What is frozen at `epoch` (0-based) under `strategy`.

    - linear_probe: every stage frozen.
    - finetune: the first `freeze_layers` stages frozen.
    - gradual_unfreeze: head only at first; one more stage from the top every `unfreeze_every`
      epochs, or at each epoch of `unfreeze_milestones`; never below `freeze_layers`.
    - lp_ft: linear probe for `probe_epochs`, then fine-tune from `freeze_layers` with every
      learning rate times `finetune_lr_mult` (`lr_scale`).
    BatchNorm: `bn` when given, else eval while every stage is frozen and train otherwise (norm
    layers of frozen stages stay in eval whatever `bn` says, see `apply_plan`).
    """
    if bn is not None and bn not in BN_MODES:
        raise VTError(f"unknown transfer.bn {bn!r}; valid: {', '.join(BN_MODES)}")
    if freeze_layers > num_stages:
        raise VTError(f"transfer.freeze_layers={freeze_layers} but the backbone has {num_stages} stages (0..{num_stages})")
    scale = 1.0
    if strategy == "linear_probe":
        frozen = num_stages
    elif strategy == "finetune":
        frozen = freeze_layers
    elif strategy == "gradual_unfreeze":
        if unfreeze_milestones:
            unfrozen = sum(1 for m in unfreeze_milestones if epoch >= m)
        else:
            unfrozen = epoch // unfreeze_every
        frozen = max(freeze_layers, num_stages - unfrozen)
    elif strategy == "lp_ft":
        probe = 1 if probe_epochs is None else probe_epochs
        frozen = num_stages if epoch < probe else freeze_layers
        if epoch >= probe:
            scale = finetune_lr_mult
    else:
        raise VTError(f"unknown transfer.strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    default_bn = "eval" if frozen == num_stages else "train"
    return TransferPlan(strategy=strategy, frozen_stages=frozen, bn=bn or default_bn, lr_scale=scale)


def apply_plan(model: nn.Module, plan: TransferPlan) -> None:
    """Set `requires_grad` per stage, mark the norm layers to keep in eval, swap BN if asked."""
    backbone = find_backbone(model)
    if plan.bn == "frozen":
        freeze_batchnorm(backbone)
    frozen_ids: set[int] = set()
    for i, stage in enumerate(backbone.stages):
        trainable = i >= plan.frozen_stages
        for p in stage.parameters():
            p.requires_grad_(trainable)
        if not trainable:
            frozen_ids.update(id(m) for m in stage.modules())
    # parameters of the body outside every stage (rare: e.g. a final norm) follow the last stage
    staged = {id(p) for s in backbone.stages for p in s.parameters()}
    last_trainable = plan.frozen_stages < len(backbone.stages)
    for p in backbone.parameters():
        if id(p) not in staged:
            p.requires_grad_(last_trainable)
    if not last_trainable:   # norm layers outside every stage follow the last stage too
        frozen_ids.update(id(m) for m in backbone.modules())
    eval_norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)
                  and (plan.bn == "eval" or id(m) in frozen_ids)]
    model._vt_eval_norms = eval_norms  # noqa: SLF001 - read by train_mode()


def train_mode(model: nn.Module) -> None:
    """`model.train()`, except norm layers of frozen stages (or all, with bn=eval) stay in eval."""
    model.train()
    inner = getattr(model, "module", model)   # under DDP the marks sit on the wrapped model
    for m in getattr(inner, "_vt_eval_norms", ()):
        m.eval()


def freeze_batchnorm(backbone: nn.Module) -> None:
    """Replace every BatchNorm below `backbone` by its frozen twin (same statistics, no updates).

    timm's `freeze_batch_norm_2d` converts plain BatchNorm2d and timm's BatchNorm+activation
    layers (keeping the activation). Stages may hold their own references to the body's modules
    (a ResNet stem is `Sequential(conv1, bn1, relu)`), so the swap is memoised and applied to the
    body and to every stage: both then run the same frozen module."""
    from timm.layers import freeze_batch_norm_2d

    memo: dict[int, nn.Module] = {}

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, _BatchNorm):
                if id(child) not in memo:
                    memo[id(child)] = freeze_batch_norm_2d(child)
                setattr(module, name, memo[id(child)])
            else:
                swap(child)

    swap(backbone)
    for stage in getattr(backbone, "stages", ()):
        swap(stage)


def param_groups(model: nn.Module, *, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0,
                 layer_lr_decay: float | None = None) -> list[dict]:
    """Optimizer groups: the head at `lr`; backbone stage i of n at
    `lr * backbone_lr_mult * layer_lr_decay ** (n - 1 - i)`. Biases and norm weights get no
    weight decay. Every parameter is included, frozen or not, so unfreezing later needs no new
    optimizer (AdamW and SGD skip parameters whose grad is None)."""
    backbone = find_backbone(model)
    n = len(backbone.stages)
    stage_of: dict[int, int] = {}
    for i, stage in enumerate(backbone.stages):
        for p in stage.parameters():
            stage_of.setdefault(id(p), i)
    backbone_ids = {id(p) for p in backbone.parameters()}
    groups: dict[tuple[str, bool], dict] = {}
    for name, p in model.named_parameters():
        if id(p) in backbone_ids:
            i = stage_of.get(id(p), n - 1)
            scale = backbone_lr_mult * (layer_lr_decay ** (n - 1 - i) if layer_lr_decay else 1.0)
            key = f"stage{i}"
        else:
            scale, key = 1.0, "head"
        if getattr(p, "vt_lr_mult", None):   # a module's own multiple (adapt: the discriminator at 10x)
            scale, key = scale * p.vt_lr_mult, f"{key}_x{p.vt_lr_mult:g}"
        no_decay = p.ndim <= 1
        g = groups.setdefault((key, no_decay), {"params": [], "lr": lr * scale, "name": key,
                                                 "weight_decay": 0.0 if no_decay else weight_decay})
        g["params"].append(p)
    return [g for g in groups.values() if g["params"]]
