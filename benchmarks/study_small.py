"""A small real data-size study: scikit-learn's handwritten digits (1,797 real 8x8 grey images,
10 classes, shipped offline) as PNG class folders, then

    vt study classification "study.strategies=[linear_probe, scratch]" "study.samples_per_class=[5, 20]"
        study.seeds=2 ...

The train pool is each class's first 100 images, the validation split its last 40 (disjoint; every
class has at least 174). Prints the study table; OUT/study.{json,md,png} hold the results.

    python benchmarks/study_small.py --out /tmp/digits-study
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(root: Path, *, train_per_class: int = 100, val_per_class: int = 40, size: int = 32) -> Path:
    """root/{train,val}/<digit>/<index>.png, grey, upscaled bicubically from 8x8 to `size`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        rows = np.flatnonzero(digits.target == label)
        assert len(rows) >= train_per_class + val_per_class
        for split, chosen in (("train", rows[:train_per_class]), ("val", rows[-val_per_class:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for r in chosen:
                grey = (digits.images[r] / 16.0 * 255).astype(np.uint8)
                Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BICUBIC).save(
                    folder / f"{r:04d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/digits-study")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--strategies", default="[linear_probe, scratch]")
    ap.add_argument("--samples-per-class", default="[5, 20]")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=0, help="loader processes (0: in the main process, "
                    "fastest for 32-64 px images on 2 cores)")
    args = ap.parse_args()
    out = Path(args.out)
    data = write_digits(out / "data")
    from vision_transfer.cli import main as vt

    code = vt(["study", "classification", "data.format=folder", f"data.root={data}",
               "model.backbone=tf_efficientnet_lite0", "model.weights=imagenet",
               f"train.image_size={args.image_size}", f"train.epochs={args.epochs}", "train.batch_size=32",
               f"data.num_workers={args.num_workers}",
               f"study.strategies={args.strategies}", f"study.samples_per_class={args.samples_per_class}",
               f"study.seeds={args.seeds}", f"run.out_dir={out}"])
    if code == 0:
        print((out / "study.md").read_text())
    raise SystemExit(code)


if __name__ == "__main__":
    main()
