"""Optimizers and the learning-rate schedules (warm-up, then cosine / flat-then-cosine / constant;\nstepped per optimizer step)."""
from __future__ import annotations

import math

import torch

from ..errors import VTError


def build_optimizer(groups: list[dict], *, name: str = "adamw", lr: float) -> torch.optim.Optimizer:
    """AdamW runs fused (one kernel over all tensors) when every parameter is a float on the CPU or
    a CUDA device: on the CPU its step is 5x faster than the per-tensor loop PyTorch picks there
    (4.8 vs 23.7 ms for a 7.8 M-parameter U-Net), and on CUDA it is the fastest path too."""
    if name == "adamw":
        params = [p for g in groups for p in g["params"]]
        fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise VTError(f"unknown train.optimizer {name!r}; valid: adamw, sgd")


SCHEDULES = ("cosine", "flat_cosine", "constant")
FLAT_FRACTION = 0.75    # flat_cosine: the lr stays at its peak for this share of the steps (fastai's fit_flat_cos)


def lr_schedule(optimizer: torch.optim.Optimizer, *, kind: str = "cosine", total_steps: int, warmup_steps: int,
                min_ratio: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 to each group's lr over `warmup_steps`, then
    `cosine`: cosine decay to `min_ratio` x lr by the last step;
    `flat_cosine`: the peak lr until `FLAT_FRACTION` of the steps, then cosine to `min_ratio` x lr;
    `constant`: the peak lr to the end."""
    if kind not in SCHEDULES:
        raise VTError(f"unknown train.schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    total_steps = max(1, total_steps)
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0
    decay_from = warmup_steps if kind == "cosine" else max(warmup_steps, round(FLAT_FRACTION * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if kind == "constant" or step < decay_from:
            return 1.0
        t = (step - decay_from) / max(1, total_steps - decay_from)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

