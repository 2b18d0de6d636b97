"""`vt rank TASK [key=value ...]`: score candidate backbones on the user's labelled images without
fine-tuning, by LogME of their pooled features (the features a linear probe would see), and print
a ranked table with the seconds each took.

    vt rank classification data.root=cells train.image_size=96 \
        "rank.backbones=[tf_efficientnet_lite0, tf_efficientnet_lite2, tf_efficientnet_lite0@none]"

A candidate is `NAME` (its default ImageNet weights) or `NAME@WEIGHTS` (`@none` = random init: a
negative control every real backbone should beat). Default: every backbone whose weights are on
this machine, plus the first of them from random init. Writes `rank.json` to `run.out_dir`.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..errors import VTError
from ..files import write_json
from .logme import logme


def parse_candidate(text: str) -> tuple[str, str | None]:
    """`"resnet18"` -> ("resnet18", "imagenet"); `"resnet18@none"` -> ("resnet18", None)."""
    name, _, weights = str(text).partition("@")
    if not name:
        raise VTError(f"rank.backbones: {text!r} names no backbone (NAME or NAME@WEIGHTS)")
    weights = weights or "imagenet"
    return name, None if weights.lower() == "none" else weights


def default_candidates() -> list[str]:
    """Backbones with weights on this machine, then the first one from random init."""
    from ..backbones.listing import backbone_rows

    offline = [r["name"] for r in backbone_rows() if r["offline"]]
    return offline + [f"{offline[0]}@none"] if offline else ["tf_efficientnet_lite0@none"]


@torch.inference_mode()
def pooled_features(backbone, dataset, *, device: torch.device, batch_size: int = 64, desc: str = "") -> tuple:
    """`(features (N, C) float64, labels (N,))`: the deepest map, global-average pooled, eval mode."""
    from rich.progress import Progress

    from ..engine.logging import console

    backbone.eval().to(device)
    feats, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with Progress(console=console, transient=True) as bar:
        tid = bar.add_task(f"features {desc}", total=len(dataset))
        for batch in loader:
            x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
            feats.append(backbone(x)[-1].float().mean(dim=(2, 3)).cpu())
            labels.append(batch["label"])
            bar.advance(tid, len(x))
    return torch.cat(feats).double().numpy(), torch.cat(labels).numpy()


def score_candidate(cfg: Config, candidate: str, *, device: torch.device) -> dict:
    from ..backbones import create_backbone
    from ..engine.subsample import subsample_train
    from ..task import get_task

    task = get_task(cfg.task)
    name, weights = parse_candidate(candidate)
    t0 = time.perf_counter()
    bb = create_backbone(name, weights=weights)
    image_size = cfg.train.image_size   # resolved in rank_from_config
    splits = task.build_datasets(data=cfg.data, image_size=image_size, preprocessing=bb.preprocessing,
                                 seed=cfg.train.seed, augment=False)
    data = splits.train
    if cfg.rank.max_per_class:
        data = subsample_train(data, per_class=cfg.rank.max_per_class, seed=cfg.train.seed)
    feats, labels = pooled_features(bb, data, device=device, batch_size=cfg.train.batch_size, desc=candidate)
    score = logme(feats, labels)
    return {"candidate": candidate, "backbone": name, "weights": weights or "none", "logme": score,
            "images": int(len(labels)), "feature_dim": int(feats.shape[1]), "seconds": time.perf_counter() - t0}


def rank_from_config(cfg: Config) -> list[dict]:
    """Score every candidate, best first; writes `rank.json` and prints the table."""
    from ..engine.device import resolve_device
    from ..engine.logging import console

    if cfg.task != "classification":
        raise VTError(f"vt rank scores image-level labels (LogME); {cfg.task} is not supported yet: "
                      "rank on a classification layout of the same images")
    from ..defaults import resolve_defaults
    from ..task import get_task

    cfg = resolve_defaults(cfg, get_task(cfg.task))
    device = resolve_device(cfg.train.device)
    candidates = cfg.rank.backbones or default_candidates()
    rows = []
    for c in candidates:
        rows.append(score_candidate(cfg, c, device=device))
        console.print(f"{c}: LogME {rows[-1]['logme']:.4f} ({rows[-1]['seconds']:.1f} s)")
    rows.sort(key=lambda r: -r["logme"])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    out = Path(cfg.run.out_dir or "vt-rank")
    write_json(out / "rank.json", {"task": cfg.task, "metric": "logme", "results": rows})
    _print_table(rows, console)
    from rich.markup import escape

    check = f"\"study.backbones=[{', '.join(r['candidate'] for r in rows[:3])}]\""
    console.print(f"ranking: {out / 'rank.json'}; check it with vt study {cfg.task} {escape(check)}")
    return rows


def _print_table(rows: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="backbones ranked by LogME (higher transfers better; no training)")
    for col in ("rank", "backbone", "weights", "LogME", "dim", "images", "seconds"):
        table.add_column(col, justify="right" if col not in ("backbone", "weights") else "left")
    for r in rows:
        table.add_row(str(r["rank"]), r["backbone"], r["weights"], f"{r['logme']:.4f}", str(r["feature_dim"]),
                      str(r["images"]), f"{r['seconds']:.1f}")
    console.print(table)


def rank_command(args) -> int:
    from ..config import load_config

    rank_from_config(load_config(args.task, path=args.config, overrides=args.overrides))
    return 0


__all__ = ["logme", "rank_from_config", "rank_command", "parse_candidate", "pooled_features"]
