"""A/B of the demo's fine-tune: its exact config (vision_transfer/demo.py, FULL budget, seed 0)
with a few overrides, one arm per process call, so two arms can run side by side.

    python benchmarks/demo_finetune_ab.py --arm lr2e-3 train.lr=2e-3 train.ema=0.99

Prints one JSON row: best accuracy / macro-F1 of the raw weights, the best epoch, the per-epoch
validation accuracy, the EMA's best accuracy when train.ema is set, and the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

import vision_transfer as vt
from vision_transfer.demo import FULL, _runs, materialise_elpv


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", required=True)
    ap.add_argument("--out", default="/tmp/vt-demo-ab")
    ap.add_argument("overrides", nargs="*", help="key=value on top of the demo's fine-tune")
    a = ap.parse_args()
    root = materialise_elpv(Path(os.environ.get("VT_CACHE_DIR", Path.home() / ".cache" / "vision_transfer")), FULL)
    label, base = _runs(FULL)[1]
    assert label.startswith("fine-tune")
    extra = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.overrides)}
    run_dir = Path(a.out) / a.arm
    t0 = time.perf_counter()
    run = vt.train("classification", overrides={**base, **extra, "data.format": "folder", "data.root": str(root),
                                                "run.out_dir": str(run_dir), "run.tensorboard": False})
    hist = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    row = {"arm": a.arm, "overrides": extra, "accuracy": run.metrics["accuracy"], "macro_f1": run.metrics["macro_f1"],
           "best_epoch": run.best_epoch, "val_accuracy": [round(r["accuracy"], 4) for r in hist],
           "seconds": round(time.perf_counter() - t0, 1), "threads": os.environ.get("OMP_NUM_THREADS")}
    ema_file = run_dir / "ema_metrics.jsonl"
    if ema_file.is_file():
        ema = [json.loads(x) for x in ema_file.read_text().splitlines()]
        row["ema_val_accuracy"] = [round(r["accuracy"], 4) for r in ema]
        row["ema_best_accuracy"] = max(r["accuracy"] for r in ema)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
