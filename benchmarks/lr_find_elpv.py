"""The lr range test on ELPV, checked by training: the sweep, then fine-tunes at the suggestion
and at 10x it (and at the demo's hand-picked 1e-3), each with an EMA of the weights beside.

    nice -n 10 python benchmarks/lr_find_elpv.py [--size 96] [--epochs 8] [--ema 0.99]

Data: the demo's folder (100 train / 150 val cells per class). Prints the suggestion and, per
fine-tune, the best and last validation accuracy of the raw weights and of the EMA weights.
The sweep's plot is OUT/sweep/lr_find.png.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import vision_transfer as vt
from vision_transfer.config import load_config
from vision_transfer.demo import FULL, materialise_elpv
from vision_transfer.tuning import lr_find


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="/tmp/vt-lr-find-elpv")
    ap.add_argument("--with-demo-lr", action="store_true", help="also fine-tune at the demo's 1e-3")
    a = ap.parse_args()
    out = Path(a.out)
    root = materialise_elpv(Path(os.environ.get("VT_CACHE_DIR", Path.home() / ".cache" / "vision_transfer")), FULL)
    common = [f"data.root={root}", "data.format=folder", f"train.image_size={a.size}", "train.batch_size=16",
              "data.crop_scale=0.8", "data.vflip=true", "data.rotate90=true", "transfer.strategy=finetune",
              "model.weights=imagenet", "run.tensorboard=false", "train.channels_last=true"]
    cfg = load_config("classification", overrides=common + [f"run.out_dir={out / 'sweep'}",
                                                            f"lr_find.num_steps={a.steps}", "lr_find.start_lr=1e-6"])
    sweep, _ = lr_find(cfg)
    print(json.dumps({"suggestion": sweep.suggestion, "min_loss_lr": sweep.min_loss_lr,
                      "steepest_lr": sweep.steepest_lr, "diverged": sweep.diverged, "steps": len(sweep.lrs)}),
          flush=True)
    rows = []
    runs = [("suggestion", sweep.suggestion), ("10x suggestion", 10 * sweep.suggestion)]
    for label, lr in runs + ([("demo's 1e-3", 1e-3)] if a.with_demo_lr else []):
        run_dir = out / label.replace(" ", "_").replace("'", "")
        run = vt.train("classification", overrides=common + [f"train.lr={lr}", f"train.epochs={a.epochs}",
                                                             f"train.ema={a.ema}", f"run.out_dir={run_dir}"])
        hist = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        ema = [json.loads(x) for x in (run_dir / "ema_metrics.jsonl").read_text().splitlines()]
        row = {"run": label, "lr": lr, "best_acc": run.metrics["accuracy"], "last_acc": hist[-1]["accuracy"],
               "ema_best_acc": max(r["accuracy"] for r in ema), "ema_last_acc": ema[-1]["accuracy"],
               "final_train_loss": hist[-1]["train_loss"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nELPV fine-tune, Lite0 ImageNet, {a.size} px, {a.epochs} epochs, seed 0; suggestion "
          f"{sweep.suggestion:.3g} ({sweep.rule}; loss lowest at {sweep.min_loss_lr:.3g}, steepest "
          f"{sweep.steepest_lr if sweep.steepest_lr is None else f'{sweep.steepest_lr:.3g}'})")
    print("| lr | best acc | last acc | EMA best | EMA last | final train loss |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} ({r['lr']:.3g}) | {r['best_acc']:.3f} | {r['last_acc']:.3f} | {r['ema_best_acc']:.3f} | "
              f"{r['ema_last_acc']:.3f} | {r['final_train_loss']:.3f} |")
    (out / "results.json").write_text(json.dumps({"sweep": sweep.to_dict(), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
