"""Linear probe on real digits: the acceptance run, and cached vs uncached features side by side.

    python benchmarks/linear_probe.py [--epochs 30]

1. `vt train classification ... transfer.strategy=linear_probe train.epochs=20 train.image_size=96` on
   scikit-learn's handwritten digits (10 classes, 20 train + 50 val images per class), timed as a
   whole process; then `vt eval` from best.pt must reproduce summary.json's accuracy exactly.
2. The same probe at --epochs epochs with `transfer.cache_features=false` (a backbone pass per
   epoch) vs `true` (one pass, cold cache), run one after the other in this process (imports paid
   once, outside both timings); prints the ratio (goal >= 10).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vision_transfer.data.digits import write_digits_folders


def vt(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vision_transfer.cli", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-probe-"))
    root = write_digits_folders(tmp / "digits", train_per_class=20, val_per_class=50)
    common = ["data.format=folder", f"data.root={root}", "model.backbone=tf_efficientnet_lite0",
              "model.weights=imagenet", "transfer.strategy=linear_probe", "train.image_size=96",
              "train.device=cpu", "train.seed=0", "run.tensorboard=false"]
    import os

    os.environ["VT_CACHE_DIR"] = str(tmp / "cache")   # a cold cache: the timing includes the one backbone pass
    secs = vt("train", "classification", *common, "train.epochs=20", f"run.out_dir={tmp / 'run'}")
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    vt("eval", "classification", "--checkpoint", str(tmp / "run" / "checkpoints" / "best.pt"), "--out",
       str(tmp / "eval"))
    evaluated = json.loads((tmp / "eval" / "metrics.json").read_text())
    print(f"acceptance: 20 epochs, whole process {secs:.1f} s (goal <= 60); accuracy {summary['metrics']['accuracy']:.4f};"
          f" vt eval {evaluated['accuracy']:.4f} ({'identical' if evaluated['accuracy'] == summary['metrics']['accuracy'] else 'DIFFERENT'})")

    # side by side in this process: imports and interpreter start-up (about 7 s here) are paid once
    # and excluded, so the ratio is what the feature cache itself buys
    import vision_transfer

    overrides = dict(x.split("=", 1) for x in common)
    overrides["model.weights"], overrides["train.epochs"] = "imagenet", args.epochs
    times, acc = {}, {}
    for cached in (False, True):
        os.environ["VT_CACHE_DIR"] = str(tmp / f"cache-{cached}")   # cold: one backbone pass is included
        t0 = time.perf_counter()
        # sgd on both sides: the ratio measures the cache, not the solver (cached features default
        # to the L-BFGS solve, which needs no epochs at all: benchmarks/linear_probe_vs_sklearn.py)
        run = vision_transfer.train("classification", overrides={**overrides, "transfer.cache_features": cached,
                                                     "transfer.probe_solver": "sgd",
                                                     "run.out_dir": str(tmp / f"run-{cached}")})
        times[cached], acc[cached] = time.perf_counter() - t0, run.metrics["accuracy"]
    print(f"{args.epochs}-epoch probe in one process: uncached {times[False]:.1f} s (accuracy {acc[False]:.3f}), "
          f"cached {times[True]:.1f} s (accuracy {acc[True]:.3f}, feature pass included); "
          f"uncached/cached = {times[False] / times[True]:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
