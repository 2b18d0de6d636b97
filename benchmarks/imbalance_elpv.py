"""Class imbalance on real data: ELPV with 300 functional vs 30 defective training cells.

    nice -n 10 python benchmarks/imbalance_elpv.py [--seeds 3] [--strategy linear_probe] [--size 96]

Per seed: a fresh draw of 300 functional and 30 defective training cells (the validation cells,
150 per class, are fixed and disjoint). Variants on the same draw: plain cross-entropy,
`train.class_weights=auto` (inverse frequency), `train.loss=focal`, focal + class weights, and
`data.sampler=balanced`. Reported: the LAST epoch's macro-F1, defective (minority) recall and
functional recall on the balanced validation cells (no epoch picked on validation data), mean
and spread over the seeds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import numpy as np

import vision_transfer as vt
from vision_transfer.demo import CLASSES, elpv_root

VARIANTS = {
    "cross-entropy": {},
    "class_weights=auto": {"train.class_weights": "auto"},
    "loss=focal": {"train.loss": "focal"},
    "focal + class_weights": {"train.loss": "focal", "train.class_weights": "auto"},
    "sampler=balanced": {"data.sampler": "balanced"},
}


def materialise(root: Path, seed: int, *, n_major: int, n_minor: int, n_val: int) -> tuple[Path, Path]:
    src = elpv_root()
    rows = [line.split() for line in (src / "labels.csv").read_text().splitlines() if line.strip()]
    by = {c: sorted(p for p, prob, _ in rows if CLASSES[int(float(prob) >= 0.5)] == c) for c in CLASSES}
    fixed = np.random.default_rng(1234)
    val, pool = {}, {}
    for c in CLASSES:
        paths = list(by[c])
        fixed.shuffle(paths)
        val[c], pool[c] = paths[:n_val], paths[n_val:]
    rng = np.random.default_rng(seed)
    train = {"functional": list(rng.choice(pool["functional"], n_major, replace=False)),
             "defective": list(rng.choice(pool["defective"], n_minor, replace=False))}
    # one validation folder for every seed: its cached features are computed once
    for folder, items in ((root / f"train-{n_major}-{n_minor}-s{seed}", train), (root / f"val-{n_val}", val)):
        if (folder / ".complete").is_file():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        for c, paths in items.items():
            (folder / c).mkdir(parents=True, exist_ok=True)
            for p in paths:
                shutil.copyfile(src / p, folder / c / Path(p).name)
        (folder / ".complete").write_text("ok\n")
    return root / f"train-{n_major}-{n_minor}-s{seed}", root / f"val-{n_val}"


def last_metrics(run_dir: Path) -> dict:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    last = rows[-1]
    pc = last["per_class"]
    return {"macro_f1": last["macro_f1"], "defective_recall": pc["defective"]["recall"],
            "functional_recall": pc["functional"]["recall"], "accuracy": last["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategy", default="linear_probe")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--work", default="/tmp/vt-imbalance")
    a = ap.parse_args()
    work = Path(a.work)
    results: dict[str, list[dict]] = {v: [] for v in a.variants}
    for seed in range(a.seeds):
        train_dir, val_dir = materialise(work / "data", seed, n_major=300, n_minor=30, n_val=150)
        for name in a.variants:
            out = work / "runs" / f"{a.strategy}-{a.size}" / f"s{seed}" / name.replace(" ", "").replace("=", "-")
            vt.train("classification", overrides={
                "data.format": "folder", "data.train.images": str(train_dir), "data.val.images": str(val_dir),
                "run.out_dir": str(out), "run.tensorboard": False,
                "model.weights": "imagenet", "transfer.strategy": a.strategy, "train.epochs": a.epochs,
                "train.image_size": a.size, "train.batch_size": 16, "train.seed": seed, "data.num_workers": 0, "data.crop_scale": 0.8,
                "data.vflip": True, "data.rotate90": True, **VARIANTS[name]})
            m = last_metrics(out)
            results[name].append(m)
            print(json.dumps({"seed": seed, "variant": name, **{k: round(v, 4) for k, v in m.items()}}), flush=True)
    print(f"\nELPV 300 functional / 30 defective, {a.strategy}, {a.size} px, {a.epochs} epochs, {a.seeds} seeds; "
          "last epoch on 150 + 150 validation cells: mean (min-max)")
    print(f"| variant | macro-F1 | defective recall | functional recall |\n|---|---|---|---|")
    for name, ms in results.items():
        cells = []
        for k in ("macro_f1", "defective_recall", "functional_recall"):
            xs = [m[k] for m in ms]
            cells.append(f"{statistics.mean(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    (work / f"results-{a.strategy}-{a.size}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
