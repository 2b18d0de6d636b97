"""`vt train segmentation` against a plain hand-written smp U-Net on the same tiles, in one run.

1. Writes a dozen 128-px training tiles and six validation tiles (background + one object
   class), unless --data DIR gives `train/{images,masks}` and `val/{images,masks}`. The default
   tiles are generated shapes (`make_scene`): no package here ships real masks.
2. Runs the issue's command line (`vt train segmentation ... train.epochs=30`, plus
   `train.seed=S`) and times it, once per seed.
3. Runs `vt predict` with the best checkpoint on the validation images and recomputes the mIoU
   from the label masks it wrote (it must equal the reported mIoU within 0.01).
4. Trains smp's own `Unet("tu-tf_efficientnet_lite0")` with the same ImageNet weights by hand:
   AdamW lr 1e-3 (constant), cross-entropy + Dice, batch 4, flips, 30 epochs, best epoch's val
   mIoU, with the same seeds.
5. An Otsu threshold per image (grey levels, the better of the two polarities) as the floor.

Twelve tiles make single runs noisy (about +/- 0.003 mIoU between seeds), so both sides run
`--seeds` seeds and the means are compared.

    python benchmarks/segmentation_vs_smp.py [--epochs 30] [--seeds 3] [--data DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

EPOCHS = 30


def write_tiles(root: Path) -> None:
    from vision_transfer.data.synthetic import make_scene

    for split, seeds in (("train", range(12)), ("val", range(1000, 1006))):
        for d in ("images", "masks"):
            (root / split / d).mkdir(parents=True, exist_ok=True)
        for s in seeds:
            sc = make_scene(seed=s, size=128, max_objects=5, min_radius=5, max_radius=18)
            Image.fromarray(sc["image"]).save(root / split / "images" / f"t{s}.png")
            Image.fromarray((sc["mask"] > 0).astype(np.uint8)).save(root / split / "masks" / f"t{s}.png")


def load_split(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    stems = sorted(p.stem for p in (root / split / "masks").glob("*.png"))
    images = [np.array(Image.open(next((root / split / "images").glob(f"{s}.*"))).convert("RGB")) for s in stems]
    masks = [np.array(Image.open(root / split / "masks" / f"{s}.png")).astype(np.int64) for s in stems]
    return images, masks, stems


def count_classes(masks) -> int:
    """Class indices run 0..K-1 (255 = ignore): K from the largest value, at least 2."""
    return max(2, 1 + max(int(m[m != 255].max(initial=0)) for m in masks))


def class_names(k: int) -> str:
    return "[background, foreground]" if k == 2 else "[background, " + ", ".join(f"class_{i}" for i in range(1, k)) + "]"


def miou(preds, targets, k: int | None = None) -> float:
    """Independent of the plugin: one confusion matrix over all pixels, 255 ignored."""
    k = k or count_classes(targets)
    cm = np.zeros((k, k), np.int64)
    for p, t in zip(preds, targets):
        keep = t != 255
        cm += np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float((tp[union > 0] / union[union > 0]).mean())


def run_vt(data: Path, out: Path, epochs: int, seed: int = 0) -> tuple[float, float, float]:
    cmd = ["vt", "train", "segmentation", "data.format=masks",
           f"data.train.images={data}/train/images", f"data.train.masks={data}/train/masks",
           f"data.val.images={data}/val/images", f"data.val.masks={data}/val/masks",
           f"data.classes={class_names(count_classes(load_split(data, 'train')[1]))}", "model.backbone=tf_efficientnet_lite0",
           "model.weights=imagenet", "transfer.strategy=finetune", f"train.epochs={epochs}",
           "train.image_size=128", "train.batch_size=4", "train.device=cpu", f"run.out_dir={out}/vt_run"]
    cmd += [f"train.seed={seed}"] if seed else []
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    reported = json.loads((out / "vt_run" / "summary.json").read_text())["metrics"]["mIoU"]
    subprocess.run(["vt", "predict", "segmentation", "--checkpoint", str(out / "vt_run/checkpoints/best.pt"),
                    str(data / "val/images"), "--out", str(out / "vt_pred"), "--device", "cpu"],
                   check=True, stdout=subprocess.DEVNULL)
    _, masks, stems = load_split(data, "val")
    preds = [np.array(Image.open(out / "vt_pred" / f"{s}.png")).astype(np.int64) for s in stems]
    return wall, reported, miou(preds, masks)


def run_smp(data: Path, epochs: int, seed: int = 0) -> tuple[float, float]:
    """A plain smp U-Net training loop, written the way its README shows."""
    import albumentations as A
    import segmentation_models_pytorch as smp
    import torch

    from vision_transfer.backbones.timm_family import load_packaged

    torch.manual_seed(seed)
    tr_x, tr_y, _ = load_split(data, "train")
    va_x, va_y, _ = load_split(data, "val")
    k = count_classes(tr_y + va_y)
    model = smp.Unet("tu-tf_efficientnet_lite0", encoder_weights=None, classes=k)
    load_packaged(model.encoder.model, "tf_efficientnet_lite0")       # the same ImageNet weights
    norm = A.Normalize(mean=(0.5,) * 3, std=(0.5,) * 3)
    aug = A.Compose([A.HorizontalFlip(), A.VerticalFlip()])
    aug.set_random_seed(seed)
    ce, dice = torch.nn.CrossEntropyLoss(ignore_index=255), smp.losses.DiceLoss("multiclass", ignore_index=255)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    to_t = lambda im: torch.from_numpy(norm(image=im)["image"]).permute(2, 0, 1)  # noqa: E731
    best, t0, rng = 0.0, time.perf_counter(), np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(tr_x))
        for b in range(0, len(order), 4):
            batch = [aug(image=tr_x[i], mask=tr_y[i].astype(np.uint8)) for i in order[b:b + 4]]
            x = torch.stack([to_t(s["image"]) for s in batch])
            y = torch.stack([torch.from_numpy(s["mask"].astype(np.int64)) for s in batch])
            logits = model(x)
            loss = ce(logits, y) + dice(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            preds = [model(to_t(im)[None]).argmax(1)[0].numpy() for im in va_x]
        best = max(best, miou(preds, va_y, k))
    return time.perf_counter() - t0, best


def otsu(data: Path) -> float:
    from skimage.filters import threshold_otsu

    images, masks, _ = load_split(data, "val")
    preds = []
    for im, m in zip(images, masks):
        g = im.mean(2)
        p = (g > threshold_otsu(g)).astype(np.int64)
        preds.append(p if miou([p], [m]) >= miou([1 - p], [m]) else 1 - p)
    return miou(preds, masks, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="folder with train/ and val/ (images/ + masks/); default: generated")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="seg-bench-"))
    data = args.data or out / "tiles"
    if args.data is None:
        write_tiles(data)
    print(f"data: {data} ({'given' if args.data else 'generated make_scene tiles'}), {args.epochs} epochs, CPU")
    vt_rows, smp_rows, ok = [], [], True
    for seed in range(args.seeds):
        wall, reported, recomputed = run_vt(data, out / f"seed{seed}", args.epochs, seed)
        smp_time, smp_miou = run_smp(data, args.epochs, seed=seed)
        vt_rows.append(reported)
        smp_rows.append(smp_miou)
        ok &= abs(reported - recomputed) <= 0.01
        print(f"seed {seed}: vt train segmentation mIoU {reported:.4f} (reported), {recomputed:.4f} (recomputed "
              f"from vt predict masks, |diff| {abs(reported - recomputed):.4f}), whole command {wall:.1f} s; "
              f"plain smp U-Net {smp_miou:.4f} (best epoch), loop {smp_time:.1f} s", flush=True)
    binary = count_classes(load_split(data, "val")[1]) == 2
    floor = f"; Otsu threshold {otsu(data):.4f}" if binary else ""
    vt_mean, smp_mean = float(np.mean(vt_rows)), float(np.mean(smp_rows))
    print(f"mean over {args.seeds} seeds: vt {vt_mean:.4f}, plain smp U-Net {smp_mean:.4f}, "
          f"ratio vt / smp {vt_mean / max(smp_mean, 1e-9):.3f}{floor}")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
