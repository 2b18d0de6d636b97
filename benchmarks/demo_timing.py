"""Where the demo's fine-tune time goes: one training epoch and one evaluation pass, side by side.

    nice -n 10 python benchmarks/demo_timing.py [--rounds 2] [--sizes 128 112]

The demo's data (ELPV, 100 train / 150 val cells per class), its model (Lite0 + linear head) and
its loop (`train_one_epoch`, `evaluate`). For each variant (channels-last on/off, 0 or 1 loader
workers, image size) it times a train epoch and an eval pass, interleaving the variants over
`--rounds` so a loaded machine hurts all of them alike, and prints the medians and the ratio to
the demo's current setting. Also times the loader alone (decode + augment), to see whether data
or compute bounds an epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from vision_transfer.api import build_model
from vision_transfer.backbones import create_backbone
from vision_transfer.config import build_config
from vision_transfer.demo import FULL, materialise_elpv
from vision_transfer.engine.device import Runtime
from vision_transfer.engine.loop import evaluate, make_loader, train_one_epoch
from vision_transfer.engine.optim import build_optimizer, lr_schedule
from vision_transfer.task import get_task


def _spread(n: int, k: int) -> list[int]:
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def _setup(size: int):
    task = get_task("classification")
    root = materialise_elpv(Path(os.environ.get("VT_CACHE_DIR", Path.home() / ".cache" / "vision_transfer")), FULL)
    cfg = build_config("classification", {"data": {"format": "folder", "root": str(root), "crop_scale": 0.8,
                                                   "vflip": True, "rotate90": True}})
    bb = create_backbone("tf_efficientnet_lite0", weights="imagenet")
    splits = task.build_datasets(data=cfg.data, image_size=size, preprocessing=bb.preprocessing, seed=0)
    model = build_model("classification", backbone=bb, num_classes=2)
    return task, splits, model


def time_variant(size: int, channels_last: bool, workers: int, n_train: int | None = None,
                 n_val: int | None = None) -> dict:
    task, splits, model = _setup(size)
    if n_train:   # a class-balanced prefix of each split: cheaper, same per-image cost
        from torch.utils.data import Subset

        splits.train = Subset(splits.train, _spread(len(splits.train), n_train))
        splits.val = Subset(splits.val, _spread(len(splits.val), n_val or n_train))
    rt = Runtime(torch.device("cpu"))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = build_optimizer([{"params": list(model.parameters()), "lr": 1e-3, "weight_decay": 1e-4}],
                          name="adamw", lr=1e-3)
    train = make_loader(splits.train, task, batch_size=FULL.batch_size, train=True, seed=0, rt=rt,
                        num_workers=workers)
    val = make_loader(splits.val, task, batch_size=FULL.batch_size, train=False, seed=0, rt=rt, num_workers=workers)
    sched = lr_schedule(opt, kind="cosine", total_steps=10 * len(train), warmup_steps=len(train))
    t0 = time.perf_counter()
    for _ in train:   # loader alone (also warms the worker up)
        pass
    for _ in val:
        pass
    t_load = time.perf_counter() - t0
    c0, t0 = time.process_time(), time.perf_counter()
    train_one_epoch(model, task, train, optimizer=opt, scheduler=sched, rt=rt, dtype=None,
                    channels_last=channels_last, scaler=None)
    c1, t1 = time.process_time(), time.perf_counter()
    m = evaluate(model, task, val, device=rt.device, classes=splits.classes)
    c2, t2 = time.process_time(), time.perf_counter()
    # process_time: CPU seconds of this process (its compute threads). With one thread it is
    # nearly immune to other sessions on the machine (with two, threads spin while waiting for
    # each other and a loaded machine inflates it); it leaves out the loader worker's CPU
    return {"size": size, "channels_last": channels_last, "workers": workers, "load_s": t_load,
            "train_s": t1 - t0, "eval_s": t2 - t1, "train_cpu_s": c1 - c0, "eval_cpu_s": c2 - c1,
            "accuracy": m["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128])
    ap.add_argument("--out", default="benchmarks/demo_timing.json")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 0])
    ap.add_argument("--threads", type=int, default=2, help="1: CPU seconds are a load-proof cost (no thread spin)")
    ap.add_argument("--n-train", type=int, default=None, help="images per epoch (default: all 200)")
    ap.add_argument("--n-val", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    variants = [(s, cl, w) for s in a.sizes for cl in (False, True) for w in a.workers]
    rows: list[dict] = []
    for r in range(a.rounds):
        for v in variants:
            row = time_variant(*v, n_train=a.n_train, n_val=a.n_val)
            row["round"] = r
            rows.append(row)
            print(json.dumps({k: round(x, 2) if isinstance(x, float) else x for k, x in row.items()}), flush=True)
    keys = ("load_s", "train_s", "eval_s", "train_cpu_s", "eval_cpu_s")
    base = [x for x in rows if (x["size"], x["channels_last"], x["workers"]) == variants[0]]
    b = {k: statistics.median(x[k] for x in base) for k in keys}
    print(f"\n{'size':>4} {'cl':>5} {'wk':>3} " + " ".join(f"{k:>11}" for k in keys) + "   (ratio to the first row)")
    for v in variants:
        xs = [x for x in rows if (x["size"], x["channels_last"], x["workers"]) == v]
        med = {k: statistics.median(x[k] for x in xs) for k in keys}
        print(f"{v[0]:>4} {str(v[1]):>5} {v[2]:>3} " + " ".join(f"{med[k]:5.1f} {med[k] / b[k]:4.2f}x" for k in keys))
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
