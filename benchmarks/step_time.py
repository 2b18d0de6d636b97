"""Our training step vs a bare hand-written PyTorch loop: same model, data, optimizer and schedule.

    python benchmarks/step_time.py [--device cpu|cuda] [--size 64] [--batch 32] [--rounds 3]

Alternates bare and ours (`vision_transfer.engine.fit`, progress bar and all) for several rounds and
prints the median epoch time of each and their ratio (goal <= 1.03). On CUDA both use the same AMP
dtype and channels-last.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vision_transfer.api import build_model
from vision_transfer.engine.device import Runtime, amp_dtype
from vision_transfer.config import TrainConfig, TransferConfig
from vision_transfer.engine.loop import FitSettings, fit
from vision_transfer.engine.optim import lr_schedule
from vision_transfer.task import get_task


class Tensors(Dataset):
    def __init__(self, n: int, size: int, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i]}


def bare_epoch(model, data, *, batch: int, device, dtype, channels_last: bool) -> float:
    """The loop a user would write by hand."""
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # the optimizer ours builds (fused AdamW), so the ratio measures the loop, not the optimizer
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=0, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    sched = lr_schedule(opt, total_steps=len(loader), warmup_steps=1)
    t0 = time.perf_counter()
    for b in loader:
        x, y = b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def ours_epoch(model, data, *, batch: int, device, channels_last: bool, amp: str) -> float:
    settings = FitSettings(train=TrainConfig(epochs=1, batch_size=batch, lr=1e-3, warmup_epochs=0, schedule="cosine",
                                             channels_last=channels_last, amp=amp),
                           transfer=TransferConfig(bn="train"), num_workers=0, tensorboard=False)
    result = fit(model, get_task("classification"), train_data=data, val_data=None,
                 classes=[str(i) for i in range(10)], settings=settings, runtime=Runtime(device))
    return result.history[0]["epoch_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"))
    ap.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    size, batch = args.size or (224 if gpu else 64), args.batch or (128 if gpu else 32)
    n = args.images or (batch * 20 if gpu else batch * 6)
    data = Tensors(n, size, 10)
    base = build_model("classification", backbone="tf_efficientnet_lite0", weights="imagenet", num_classes=10)
    dtype = amp_dtype(device, args.amp)
    cl = gpu if args.channels_last == "auto" else args.channels_last == "on"
    bare_epoch(copy.deepcopy(base), data, batch=batch, device=device, dtype=dtype, channels_last=cl)  # warm-up
    bare, ours = [], []
    for _ in range(args.rounds):
        bare.append(bare_epoch(copy.deepcopy(base), data, batch=batch, device=device, dtype=dtype, channels_last=cl))
        ours.append(ours_epoch(copy.deepcopy(base), data, batch=batch, device=device, channels_last=cl, amp=args.amp))
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"{device.type}: Lite0 fine-tune, {n} images of {size} px, batch {batch}, amp {dtype}, channels_last {cl}")
    print(f"bare loop {b:.2f} s/epoch ({n / b:.0f} img/s)  ours {o:.2f} s/epoch ({n / o:.0f} img/s)  "
          f"ours/bare = {o / b:.3f} (goal <= 1.03)")


if __name__ == "__main__":
    main()
