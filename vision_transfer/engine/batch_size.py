"""`train.batch_size=auto`: the largest batch that trains on the device, found by doubling
(as Ultralytics' AutoBatch and Lightning's `scale_batch_size(mode="power")` do).

Each trial is one forward and backward pass of the task's training step on real samples, with
the strategy's epoch-0 freezing applied (frozen stages keep no activations for backward). On
CUDA a size fits when it runs and its peak memory stays under `CUDA_FRACTION` of the device (the
optimizer's state and fragmentation need the rest). On the CPU memory is rarely the limit and
a bigger batch is not faster (two cores saturate near 16-32 images), while fewer steps per epoch
hurt small datasets: the search stops at `CPU_MAX_BATCH`. Never more than the training set.
Weights and BatchNorm statistics are restored after the trials.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import Dataset

from ..task import Task
from ..config import TransferConfig
from .transfer import train_mode

CPU_MAX_BATCH = 32
CUDA_MAX_BATCH = 1024
CUDA_FRACTION = 0.8


def _oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e) or "can't allocate" in str(e)


def _trial(model: nn.Module, task: Task, dataset: Dataset, size: int, device: torch.device) -> float:
    """One training step at `size`; returns its peak memory as a fraction of the device (CUDA), else 0."""
    batch = task.collate([dataset[i % len(dataset)] for i in range(size)])
    batch = task.to_device(batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loss = task.train_step(model, batch)["loss"]
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / torch.cuda.get_device_properties(device).total_memory
    return 0.0


def auto_batch_size(model: nn.Module, task: Task, dataset: Dataset, *, device: torch.device,
                    transfer: TransferConfig | None = None, max_batch: int | None = None) -> tuple[int, dict]:
    """`(batch_size, report)`: the largest power of two (>= 2) that trains, capped as above."""
    from .lr_find import apply_epoch0_plan

    cuda = device.type == "cuda"
    cap = min(max_batch or (CUDA_MAX_BATCH if cuda else CPU_MAX_BATCH), len(dataset))
    model.to(device)
    saved = copy.deepcopy(model.state_dict())
    grads = {id(p): p.requires_grad for p in model.parameters()}
    apply_epoch0_plan(model, transfer or TransferConfig())
    train_mode(model)
    tried, best, size = [], 1, 2
    try:
        while size <= cap:
            try:
                frac = _trial(model, task, dataset, size, device)
            except RuntimeError as e:
                if not _oom(e):
                    raise
                tried.append({"batch_size": size, "fits": False})
                break
            fits = frac < CUDA_FRACTION
            tried.append({"batch_size": size, "fits": fits, **({"memory_fraction": round(frac, 3)} if cuda else {})})
            if not fits:
                break
            best, size = size, size * 2
    finally:
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.empty_cache()
        model.load_state_dict(saved, strict=False)
        for p in model.parameters():
            p.requires_grad_(grads.get(id(p), p.requires_grad))
    best = max(best, min(cap, 1))
    why = (f"largest power of two under {CUDA_FRACTION:.0%} of the GPU's memory" if cuda else
           f"CPU: capped at {CPU_MAX_BATCH} (bigger batches are not faster on a CPU)")
    if best == cap and cap == len(dataset):
        why += f"; the whole training set ({len(dataset)} samples)"
    return best, {"batch_size": best, "tried": tried, "cap": cap, "device": str(device), "rule": why}
