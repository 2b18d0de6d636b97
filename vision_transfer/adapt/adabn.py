"""AdaBN (Li et al. 2016): re-estimate the backbone's BatchNorm statistics on target images.

No training and no labels: each BatchNorm layer's running mean and variance become the
cumulative averages over the target images (momentum None), everything else stays as trained.
Works on any checkpoint: `vt adapt --checkpoint CKPT --target DIR --out FILE` (parser in cli.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from ..errors import VTError
from ..task import find_backbone


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, images: torch.utils.data.Dataset, *, device: torch.device,
                    batch_size: int = 32, num_workers: int = 0) -> int:
    """Replace the running statistics of every BatchNorm layer of `model`'s backbone by their
    averages over `images` (samples `{"image": (3, S, S)}`); returns the number of layers."""
    from .data import _images_only

    backbone = find_backbone(model)
    norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        raise VTError(f"adapt.method=adabn: backbone {backbone.name} has no BatchNorm layers to re-estimate "
                      "(frozen or no norm layers); use dann or mmd")
    was, momenta = backbone.training, [m.momentum for m in norms]
    backbone.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None      # cumulative average over all target batches
        m.train()
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_images_only, drop_last=len(images) > batch_size)
    for x in loader:
        backbone(x.to(device))
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    backbone.train(was)
    return len(norms)


def adapt_checkpoint(checkpoint: str | Path, *, target: str | Path, out: str | Path, device: str = "auto",
                     batch_size: int = 32) -> Path:
    """AdaBN on a checkpoint written by `vt train`: a new checkpoint `out` with the target's
    statistics (it records `adapt: {"method": "adabn", "target": ...}`)."""
    from ..backbones.base import Preprocessing
    from ..engine.checkpoint import load_model, read_checkpoint, save_atomic
    from ..engine.device import resolve_device
    from .data import target_dataset, target_paths

    paths = target_paths(target, key="--target")
    out = Path(out)
    if out.suffix not in (".pt", ".pth"):
        raise VTError(f"--out {out}: give a checkpoint file name ending in .pt")
    model, meta = load_model(checkpoint)
    dev = resolve_device(device)
    model.to(dev)
    data = target_dataset(paths, image_size=meta["image_size"], augment=False, seed=0,
                          preprocessing=Preprocessing.from_dict(meta["preprocessing"]))
    n = adapt_batchnorm(model, data, device=dev, batch_size=batch_size)
    ckpt = read_checkpoint(checkpoint)
    ckpt = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler")}
    ckpt["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt["adapt"] = {"method": "adabn", "target": str(target), "num_images": len(paths), "bn_layers": n}
    save_atomic(ckpt, out)
    return out


def adapt_command(args: argparse.Namespace) -> int:
    from ..engine.logging import console

    out = adapt_checkpoint(args.checkpoint, target=args.target, out=args.out, device=args.device,
                           batch_size=args.batch_size)
    console.print(f"[bold]done[/bold]: AdaBN statistics from {args.target} -> {out} "
                  f"(score it: vt eval TASK --checkpoint {out} data.val.images=LABELLED_TARGET_DIR)")
    return 0
