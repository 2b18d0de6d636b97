"""Does LogME rank backbones the way a linear probe does? On ELPV solar cells and scikit-learn
digits, for every backbone with weights offline (EfficientNet-Lite0/1/2 ImageNet) and the same
architectures from random init (negatives): LogME on the train split vs the accuracy of a linear
probe (logistic regression on the same pooled features) on the held-out split. Three seeds, each
a different 70 % of the train split; Spearman and Kendall rank correlations per seed.

    nice -n 10 python benchmarks/rank_correlation.py --out /tmp/rank-corr

Measured (README): --elpv 300 300 --digits 50 100 (96 px).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from sklearn.linear_model import LogisticRegression

from vision_transfer.backbones import create_backbone
from vision_transfer.config import DataConfig
from vision_transfer.data.digits import write_digits_folders
from vision_transfer.demo import Budget, materialise_elpv
from vision_transfer.ranking.logme import logme
from vision_transfer.ranking.rank import pooled_features
from vision_transfer.task import get_task

CANDIDATES = [(f"tf_efficientnet_lite{i}", w) for w in ("imagenet", None) for i in range(3)]


def features(root: Path, name: str, weights, size: int):
    bb = create_backbone(name, weights=weights)
    splits = get_task("classification").build_datasets(data=DataConfig(format="folder", root=str(root)),
                                                       image_size=size, preprocessing=bb.preprocessing, seed=0,
                                                       augment=False)
    cpu = torch.device("cpu")
    return (*pooled_features(bb, splits.train, device=cpu, desc=f"{name} train"),
            *pooled_features(bb, splits.val, device=cpu, desc=f"{name} val"))


def probe_accuracy(ftr, ytr, fva, yva) -> float:
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, C=1.0).fit((ftr - mu) / sd, ytr)
    return float((clf.predict((fva - mu) / sd) == yva).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/rank-corr")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--elpv", type=int, nargs=2, default=(100, 100), metavar=("TRAIN", "VAL"), help="cells per class")
    ap.add_argument("--digits", type=int, nargs=2, default=(20, 30), metavar=("TRAIN", "VAL"), help="images per class")
    args = ap.parse_args()
    out = Path(args.out)
    data = {"elpv": materialise_elpv(out / "data", Budget(*args.elpv, args.size, 1, 1, 16)),
            "digits": write_digits_folders(out / "data" / "digits", train_per_class=args.digits[0],
                                           val_per_class=args.digits[1])}
    rows = []
    for dname, root in data.items():
        for name, weights in CANDIDATES:
            t0 = time.perf_counter()
            ftr, ytr, fva, yva = features(root, name, weights, args.size)
            secs = time.perf_counter() - t0
            for seed in range(args.seeds):
                keep = np.random.default_rng(seed).permutation(len(ytr))[: int(0.7 * len(ytr))]
                rows.append({"data": dname, "backbone": name, "weights": weights or "none", "seed": seed,
                             "logme": logme(ftr[keep], ytr[keep]),
                             "probe_accuracy": probe_accuracy(ftr[keep], ytr[keep], fva, yva),
                             "feature_seconds": round(secs, 1)})
            (out / "rank_correlation.json").write_text(json.dumps(rows, indent=1))
    print("| data | backbone | weights | LogME (mean) | probe accuracy (mean ± sd) |\n|---|---|---|---|---|")
    for dname in data:
        for name, weights in CANDIDATES:
            rs = [r for r in rows if r["data"] == dname and r["backbone"] == name and r["weights"] == (weights or "none")]
            acc = [r["probe_accuracy"] for r in rs]
            print(f"| {dname} | {name} | {weights or 'none'} | {statistics.mean(r['logme'] for r in rs):.4f} | "
                  f"{statistics.mean(acc):.3f} ± {statistics.stdev(acc) if len(acc) > 1 else 0:.3f} |")
    print("\n| data | Spearman (mean ± sd over seeds) | Kendall tau |\n|---|---|---|")
    for dname in data:
        sp, kt = [], []
        for seed in range(args.seeds):
            rs = [r for r in rows if r["data"] == dname and r["seed"] == seed]
            sp.append(spearmanr([r["logme"] for r in rs], [r["probe_accuracy"] for r in rs])[0])
            kt.append(kendalltau([r["logme"] for r in rs], [r["probe_accuracy"] for r in rs])[0])
        print(f"| {dname} | {statistics.mean(sp):.3f} ± {statistics.stdev(sp):.3f} | "
              f"{statistics.mean(kt):.3f} ± {statistics.stdev(kt):.3f} |")


if __name__ == "__main__":
    main()
