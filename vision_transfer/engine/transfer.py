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

from ..config import BN_MODES, STRATEGIES, TransferConfig
from ..errors import VTError
from ..task import find_backbone
from .adapters import PEFT_STRATEGIES, set_trainable



@dataclass(frozen=True)
class TransferPlan:
    strategy: str
    frozen_stages: int        # the first k backbone stages are frozen
    bn: str                   # "train" | "eval" | "frozen"
    lr_scale: float = 1.0     # a factor on every group's learning rate in this phase


def plan_transfer(settings: TransferConfig, *, num_stages: int, epoch: int = 0) -> TransferPlan:
    """What is frozen at `epoch` (0-based) under `settings.strategy` (`transfer.*` keys).

    - linear_probe: every stage frozen.
    - finetune: the first `freeze_layers` stages frozen.
    - gradual_unfreeze: head only at first; one more stage from the top every `unfreeze_every`
      epochs, or at each epoch of `unfreeze_milestones`; never below `freeze_layers`.
    - lp_ft: linear probe for `probe_epochs`, then fine-tune from `freeze_layers` with every
      learning rate times `finetune_lr_mult` (`lr_scale`).
    - lora / bitfit: every stage frozen, then low-rank adapters / biases and norms train (adapters.py).
    BatchNorm: `bn` when given, else eval while every stage is frozen and train otherwise (norm
    layers of frozen stages stay in eval whatever `bn` says, see `apply_plan`).
    """
    t = settings
    strategy, freeze_layers, bn = t.strategy, t.freeze_layers, t.bn
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
        if t.unfreeze_milestones:
            unfrozen = sum(1 for m in t.unfreeze_milestones if epoch >= m)
        else:
            unfrozen = epoch // t.unfreeze_every
        frozen = max(freeze_layers, num_stages - unfrozen)
    elif strategy == "lp_ft":
        if t.probe_epochs is None:
            raise VTError("lp_ft needs transfer.probe_epochs (vision_transfer.defaults.resolve_defaults sets "
                          "half of train.epochs)")
        frozen = num_stages if epoch < t.probe_epochs else freeze_layers
        if epoch >= t.probe_epochs:
            scale = t.finetune_lr_mult
    elif strategy in PEFT_STRATEGIES:
        frozen = num_stages
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
    if plan.strategy in PEFT_STRATEGIES:
        set_trainable(backbone, plan.strategy)
    for m in getattr(backbone, "new_modules", ()):   # randomly initialised parts (a ViT's pyramid) train as a head
        m.requires_grad_(True)


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
