"""Devices, mixed precision and distributed set-up (DDP under torchrun: gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import VTError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Launched by torchrun: a process group exists (even of one process) and DDP wraps the model."""
        return dist.is_available() and dist.is_initialized()


def resolve_device(name: str | torch.device | None = "auto", *, option: str = "train.device") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; `option` names the setting in errors."""
    if name in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise VTError(f"{option} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VTError(f"{option} {name} asks for CUDA but no GPU is visible here; use cpu or auto")
    return dev


def setup_runtime(device: str = "auto") -> Runtime:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:   # not launched by torchrun
        return Runtime(resolve_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank=rank, world_size=world, local_rank=local)


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; never on CPU by default (slow without AMX)."""
    if amp == "off" or device.type != "cuda":
        return torch.bfloat16 if (amp == "bf16" and device.type == "cpu") else None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def use_channels_last(device: torch.device, flag: bool | None) -> bool:
    return device.type == "cuda" if flag is None else bool(flag)


def broadcast_object(obj, rt: Runtime):
    if not rt.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def default_num_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))
