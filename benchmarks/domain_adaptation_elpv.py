"""Domain adaptation on a real shift: ELPV solar cells, monocrystalline <-> polycrystalline.

Labelled cells of one type train (defect probability >= 0.5 = "defect"); unlabelled cells of the
other type are the target; held-out labelled cells of the other type score. The loop, the budget
and the numbers are adaptation_compare.py's.

    nice -n 10 python benchmarks/domain_adaptation_elpv.py --out /tmp/da --methods none dann adabn --seeds 0 1 2

Prints and writes `OUT/results.json` + `OUT/results.md`: target accuracy and balanced accuracy per
method (mean +- std over seeds), source-val accuracy, proxy A-distance, and how source-val and SND
selection track target accuracy over epochs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from adaptation_compare import add_arguments, compare
from PIL import Image

AUGMENT = {"data.crop_scale": 0.8, "data.vflip": True, "data.rotate90": True}   # no "up" in a solar cell
SIZES = {"train": 400, "val": 150}   # labelled source cells; the rest of the other type is split in two


def write_cells(root: Path, *, px: int = 96) -> Path:
    """root/{mono,poly}/{train,val,test}/{ok,defect}/*.png and root/{mono,poly}/unlabelled/*.png."""
    if (root / "done").is_file():
        return root
    from elpv_dataset.utils import load_dataset

    images, prob, kind = load_dataset()
    rng = np.random.default_rng(0)
    for t in ("mono", "poly"):
        idx = rng.permutation(np.flatnonzero(kind == t))
        a, b = idx[: SIZES["train"] + SIZES["val"]], idx[SIZES["train"] + SIZES["val"]:]
        half = len(b) // 2
        parts = {"train": a[: SIZES["train"]], "val": a[SIZES["train"]:], "unlabelled": b[:half], "test": b[half:]}
        for split, ids in parts.items():
            for i in ids:
                label = "defect" if prob[i] >= 0.5 else "ok"
                d = root / t / split / ("" if split == "unlabelled" else label)
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).resize((px, px), Image.BICUBIC).save(d / f"cell{i:04d}.png")
    (root / "done").write_text("ok\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vt-da-elpv")
    ap.add_argument("--pairs", nargs="+", default=["mono:poly", "poly:mono"])
    add_arguments(ap, epochs=4, batch=16, size=48, per_class=100, diag=150)
    args = ap.parse_args()
    out = Path(args.out)
    compare(write_cells(out / "cells"), args.pairs, args, out=out, augment=AUGMENT)


if __name__ == "__main__":
    main()
