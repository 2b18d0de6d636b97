"""Does in-domain self-supervised pretraining help on ELPV solar cells? The key measurement of `vt pretrain`.

    nice -n 10 python benchmarks/pretrain_elpv.py [--out DIR] [--pretrain-images 0] [--epochs 12]
        [--batch-size 64] [--image-size 64] [--method simclr] [--set pretrain.color_jitter=0.2 ...]
        [--shots 10 30 100] [--seeds 3] [--only a b c d]

ELPV (2,624 grey 300x300 cells; "defective" = defect probability >= 0.5, 821 cells): a fixed
stratified test split of 600 cells never enters pretraining. Pretraining uses `--pretrain-images`
cells of the rest (0: all 2,024), labels unused; `--set` passes further `vt pretrain` keys (views,
temperature, warmup). Four backbones (EfficientNet-Lite0):

    (a) random init            (b) SSL from random init
    (c) ImageNet               (d) ImageNet + SSL continued

Linear probe: pooled features (eval preset at --image-size), standardised, scikit-learn logistic
regression on k labelled cells per class drawn from the non-test cells (seeded), scored on the
600 test cells (balanced accuracy: the classes are 69/31), on the deepest map ("last") and on the
pooled maps of every stage concatenated ("all"). Pretraining monitors leave-one-out kNN accuracy
per epoch on the 300 labelled probe-pool cells (`pretrain.knn_val`; never the test cells). Prints a
table (mean +/- std over seeds) and the pretraining wall times; writes OUT/results.json. Steps are
cached in OUT under a name of the recipe, so a rerun after an interruption skips the finished
pretraining runs and feature passes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

TEST_CELLS = 600


def elpv_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 300, 300) uint8, labels (N,), pool indices, test indices), stratified test split."""
    from elpv_dataset.utils import load_dataset

    images, prob, _ = load_dataset()
    labels = (np.asarray(prob) >= 0.5).astype(np.int64)
    rng = np.random.default_rng(seed)
    test = []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test += list(idx[: round(TEST_CELLS * (labels == c).mean())])
    test = np.sort(np.asarray(test))
    pool = np.setdiff1d(np.arange(len(labels)), test)
    return np.asarray(images), labels, pool, test


def write_cells(images: np.ndarray, idx: np.ndarray, folder: Path, size: int) -> list[Path]:
    """PNG files of the cells (downsized to `size` px: decoding 300-px files per view is wasted work)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in idx:
        p = folder / f"cell_{i:04d}.png"
        if not p.exists():
            Image.fromarray(images[i]).resize((size, size), Image.BICUBIC).save(p)
        paths.append(p)
    return paths


def pretrain_run(out: Path, cells: Path, *, start: str, method: str, epochs: int, image_size: int,
                 batch_size: int, lr: float | None, knn_val: Path | None, extra: list[str]) -> tuple[Path, float]:
    """(backbone file, wall seconds) of one `vt pretrain` run, reused when already finished."""
    overrides = [f"pretrain.method={method}", f"model.weights={start}", f"train.epochs={epochs}",
                 f"train.image_size={image_size}", f"train.batch_size={batch_size}", *extra]
    if lr:
        overrides.append(f"train.lr={lr}")
    tag = hashlib.sha1(" ".join([cells.name, *overrides]).encode()).hexdigest()[:8]
    run = out / f"pretrain-{method}-{start}-{tag}"
    done = run / "summary.json"
    if done.is_file():
        return run / "backbone.safetensors", json.loads(done.read_text())["wall_s"]
    from vision_transfer.pretrain import pretrain

    overrides += [f"run.out_dir={run}", "train.resume=auto", "run.tensorboard=false", "data.num_workers=0",
                  "pretrain.monitor_images=256"]
    if knn_val:
        overrides.append(f"pretrain.knn_val={knn_val}")
    print(f"pretraining {run.name}: {' '.join(overrides)}", flush=True)
    t0 = time.perf_counter()
    res = pretrain(cells, overrides=overrides)
    wall = time.perf_counter() - t0
    summary = json.loads(done.read_text())
    summary["wall_s"] = wall
    done.write_text(json.dumps(summary, indent=2))
    return res.backbone_path, wall


def features(out: Path, name: str, weights: str, images: np.ndarray, image_size: int) -> list[np.ndarray]:
    """Pooled features `(N, C_s)` of every stage s of `images` (grey, any size) under `weights`, cached in OUT."""
    cache = out / f"features-{name}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return [z[k] for k in sorted(z.files, key=int)]
    import torch

    from vision_transfer.backbones import create_backbone
    from vision_transfer.data.transforms import embedding_transforms

    torch.manual_seed(0)   # (a): the same random init every time
    bb = create_backbone("tf_efficientnet_lite0", weights=weights).eval()
    tf = embedding_transforms(image_size=image_size, preprocessing=bb.preprocessing)
    feats: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for s in range(0, len(images), 64):
            x = torch.stack([tf(image=np.repeat(im[..., None], 3, axis=2))["image"] for im in images[s:s + 64]])
            feats.append([m.mean(dim=(2, 3)).numpy() for m in bb(x)])
    f = [np.concatenate(stage) for stage in zip(*feats)]
    np.savez(cache, **{str(i): a for i, a in enumerate(f)})
    return f


def probe(f_pool: np.ndarray, y_pool: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, *, shots: int,
          seed: int) -> float:
    """Balanced test accuracy of a logistic regression on `shots` labelled cells per class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), shots, replace=False) for c in (0, 1)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(f_pool[idx], y_pool[idx])
    return float(balanced_accuracy_score(y_test, clf.predict(f_test)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-pretrain-elpv")
    ap.add_argument("--pretrain-images", type=int, default=0, help="0: every non-test cell (2,024)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3, help="from random init")
    ap.add_argument("--lr-imagenet", type=float, default=5e-4, help="from ImageNet")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--set", nargs="*", default=["pretrain.crop_scale=0.4", "pretrain.color_jitter=0.2",
                                                   "pretrain.blur=0.2"], help="further vt pretrain keys, e.g. pretrain.color_jitter=0.1")
    ap.add_argument("--shots", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="subset of a b c d")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels, pool, test = elpv_split()
    rng = np.random.default_rng(1)
    n_pre = args.pretrain_images or len(pool)
    pre_idx = np.sort(rng.choice(pool, min(n_pre, len(pool)), replace=False))
    cells = out / f"cells-{len(pre_idx)}"
    write_cells(images, pre_idx, cells, size=max(96, args.image_size))
    arms = {"a": ("random init", "none", None), "b": ("SSL from random", "none", args.method),
            "c": ("ImageNet", "imagenet", None), "d": ("ImageNet + SSL", "imagenet", args.method)}
    chosen = args.only or list(arms)
    results_file = out / "results.json"
    results: dict = {"config": vars(args), "pretrain_images": len(pre_idx), "test_cells": len(test), "arms": {}}
    if results_file.is_file():   # runs of other arms into the same OUT add to one file
        results["arms"] = json.loads(results_file.read_text()).get("arms", {})
    # labelled cells for the probes: 150 per class of the non-test cells (enough for 100-shot draws;
    # they may overlap the unlabelled pretraining cells, as a user's labelled few would)
    probe_pool = np.sort(np.concatenate([rng.choice(pool[labels[pool] == c], 150, replace=False) for c in (0, 1)]))
    knn_val = out / "knn-val"
    for c, name in ((0, "functional"), (1, "defective")):
        write_cells(images, probe_pool[labels[probe_pool] == c], knn_val / name, size=max(96, args.image_size))
    for key in chosen:
        label, start, method = arms[key]
        weights, wall, run_dir = start, None, None
        if method:
            lr = args.lr_imagenet if start == "imagenet" and args.lr_imagenet else args.lr
            weights, wall = pretrain_run(out, cells, start=start, method=method, epochs=args.epochs,
                                         image_size=args.image_size, batch_size=args.batch_size, lr=lr,
                                         knn_val=knn_val, extra=args.set)
            run_dir, weights = weights.parent, str(weights)
        tag = f"{key}-{run_dir.name if run_dir else 'none'}-{args.image_size}"
        stages = features(out, tag, weights, images[np.concatenate([probe_pool, test])], args.image_size)
        row = {"label": label, "pretrain_wall_s": wall, "run": run_dir.name if run_dir else None, "probe": {}}
        if run_dir:
            row["curve"] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        for layers, f in (("last", stages[-1]), ("all", np.concatenate(stages, axis=1))):
            f_pool, f_test = f[: len(probe_pool)], f[len(probe_pool):]
            row["probe" if layers == "last" else "probe_all"] = probe_row = {}
            for k in args.shots:
                scores = [probe(f_pool, labels[probe_pool], f_test, labels[test], shots=k, seed=s)
                          for s in range(args.seeds)]
                probe_row[k] = {"mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1)),
                                "scores": scores}
            print(f"({key}) {label:<16} {layers:<4} " + "  ".join(f"{k}/class {v['mean']:.3f}±{v['std']:.3f}"
                                                            for k, v in probe_row.items())
                  + (f"  pretrain {wall:.0f}s" if wall else ""), flush=True)
        results["arms"][key] = row
        results_file.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
