"""Our cached linear probe vs scikit-learn's tuned logistic regression on IDENTICAL features.

    python benchmarks/linear_probe_vs_sklearn.py [--datasets elpv digits shapes] [--seeds 3] [--size 96]

Features: tf_efficientnet_lite0 (packaged ImageNet weights) at --size px, every stage pooled, from
the same cached extraction `vt train` uses (one backbone pass per data set, cached in VT_CACHE_DIR).
Per data set and seed, a stratified split into train (k per class) and a held-out test split; C is
chosen by stratified 5-fold CV on train with the SAME folds and the SAME grid for both:

- `sklearn C=1 raw`: `LogisticRegression()` on the raw last-stage features (the plain script);
- `sklearn tuned`: `StandardScaler` + `LogisticRegressionCV(Cs=grid, cv=our folds)`;
- `vt lbfgs`: `solve_probe(select="cv")` (what `transfer.probe_solver=lbfgs` runs);
- the same for `probe_layers=all` and `auto` (ours picks the stage set by CV too).
All scored on the test split; fit seconds are CPU seconds of this process (`time.process_time`:
fair on a shared machine; scikit-learn may use more than one thread, ours uses one).

Data sets: ELPV solar cells (functional vs defective; 100 train per class, 150 test per class, as
the demo), scikit-learn digits (28 px upscaled, 20 train per class, the rest test), generated
shapes (3 classes, 24 px, 20 train / 100 test per class).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vision_transfer.backbones import create_backbone
from vision_transfer.data.dataset import ImageDataset, albumentations_transform
from vision_transfer.data.transforms import classification_transforms
from vision_transfer.tasks.classification.features import cache_key, cached_features, stage_columns
from vision_transfer.tasks.classification.probe import choose, layer_candidates
from vision_transfer.tasks.classification.solver import DEFAULT_CS, solve_probe, stratified_folds


def elpv_files(tmp: Path) -> tuple[list[Path], np.ndarray]:
    from vision_transfer.demo import elpv_root

    src = elpv_root()
    rows = [line.split() for line in (src / "labels.csv").read_text().splitlines() if line.strip()]
    return [src / p for p, _, _ in rows], np.array([int(float(p) >= 0.5) for _, p, _ in rows])


def digits_files(tmp: Path) -> tuple[list[Path], np.ndarray]:
    from sklearn.datasets import load_digits

    d, paths = load_digits(), []
    for i, img in enumerate(d.images):
        p = tmp / "digits" / f"{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img / 16 * 255).astype(np.uint8), mode="L").resize((28, 28), Image.Resampling.BICUBIC).save(p)
        paths.append(p)
    return paths, d.target.copy()


def shapes_files(tmp: Path) -> tuple[list[Path], np.ndarray]:
    from vision_transfer.data.synthetic import make_classification_images

    paths, labels = [], []
    for i, (img, lab) in enumerate(make_classification_images(per_class=120, size=24, seed=0)):
        p = tmp / "shapes" / f"{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        paths.append(p)
        labels.append(lab)
    return paths, np.array(labels)


DATASETS = {"elpv": (elpv_files, 100, 150), "digits": (digits_files, 20, None), "shapes": (shapes_files, 20, 100)}


def features(paths: list[Path], labels: np.ndarray, size: int) -> tuple[torch.Tensor, list[int]]:
    bb = create_backbone("tf_efficientnet_lite0", weights="imagenet")
    t = classification_transforms("val", image_size=size, preprocessing=bb.preprocessing)
    ds = ImageDataset(paths, [{"label": int(x)} for x in labels], transform=albumentations_transform(t))
    channels = [f.channels for f in bb.stage_info]
    key = cache_key(backbone=bb.name, weights=bb.weights, preprocessing=bb.preprocessing.to_dict(), image_size=size,
                    paths=paths, channels=channels, stages=list(range(len(channels))))
    pool = lambda m: m.mean((2, 3))   # noqa: E731 - the average pool of PooledHead
    x, _ = cached_features(bb, pool, ds, key=key, device=torch.device("cpu"), batch_size=64, num_workers=0,
                           desc="features", all_stages=True)
    return x, channels


def split(labels: np.ndarray, train_k: int, test_k: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        tr += idx[:train_k].tolist()
        te += idx[train_k: train_k + test_k if test_k else None].tolist()
    return np.array(tr), np.array(te)


def sklearn_tuned(x, y, folds, seed) -> tuple[object, float]:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in np.unique(folds)]
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(DEFAULT_CS), cv=cv, max_iter=1000,
                                                                 random_state=seed))
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return model, time.process_time() - t0


def run_split(x: torch.Tensor, channels: list[int], labels: np.ndarray, tr, te, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    y = torch.as_tensor(labels)
    k = int(y.max()) + 1
    last, every = stage_columns(channels, [len(channels) - 1]), stage_columns(channels, list(range(len(channels))))
    out: dict = {}
    acc = lambda w, b, cols: float(((x[te][:, cols] @ w.float().T + b.float()).argmax(1) == y[te]).float().mean())  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = LogisticRegression(max_iter=1000).fit(x[tr][:, last].numpy(), labels[tr])
    out["sklearn C=1 raw"] = {"accuracy": float(plain.score(x[te][:, last].numpy(), labels[te]))}
    # our folds, handed to scikit-learn too: the only difference left is the solver
    counts = np.bincount(labels[tr])
    folds = stratified_folds(y[tr], int(min(5, counts.min())), seed=0).numpy()
    for name, cols in (("last", last), ("all", every)):
        sk, sk_s = sklearn_tuned(x[tr][:, cols].numpy(), labels[tr], folds, seed)
        out[f"sklearn tuned ({name})"] = {"accuracy": float(sk.score(x[te][:, cols].numpy(), labels[te])),
                                          "C": float(sk[-1].C_[0]), "fit_s": sk_s}
        t0 = time.process_time()
        fit = solve_probe(x[tr][:, cols], y[tr], num_classes=k, select="cv")
        out[f"vt lbfgs ({name})"] = {"accuracy": acc(fit.weight, fit.bias, cols), "C": fit.C,
                                     "fit_s": time.process_time() - t0}
    t0 = time.process_time()
    stages, fit, _ = choose(layer_candidates(len(channels)), channels, (x[tr], y[tr]), None, num_classes=k, C=None,
                            select="cv", label_smoothing=0.0)
    out["vt lbfgs (auto)"] = {"accuracy": acc(fit.weight, fit.bias, stage_columns(channels, stages)), "C": fit.C,
                              "stages": stages, "fit_s": time.process_time() - t0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--out", default=None, help="write all numbers as JSON here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-probe-sk-"))
    results = {}
    for name in args.datasets:
        files, train_k, test_k = DATASETS[name]
        paths, labels = files(tmp)
        t0 = time.perf_counter()
        x, channels = features(paths, labels, args.size)
        print(f"{name}: {len(paths)} images, features {tuple(x.shape)} in {time.perf_counter() - t0:.1f} s")
        runs = [run_split(x, channels, labels, *split(labels, train_k, test_k, s), s) for s in range(args.seeds)]
        results[name] = runs
        print(f"| {name} | " + " | ".join(runs[0]) + " |")
        for method in runs[0]:
            a = np.array([r[method]["accuracy"] for r in runs])
            secs = [r[method].get("fit_s") for r in runs]
            extra = f", fit {np.mean(secs):.2f} CPU s" if secs[0] is not None else ""
            extra += f", stages {[r[method]['stages'] for r in runs]}" if "stages" in runs[0][method] else ""
            print(f"  {method:<24} {a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0:.4f}  "
                  f"({', '.join(f'{v:.4f}' for v in a)}){extra}")
        gap = np.mean([r["vt lbfgs (last)"]["accuracy"] - r["sklearn tuned (last)"]["accuracy"] for r in runs])
        print(f"  vt - sklearn tuned (last): {100 * gap:+.2f} points (goal: within 0.5)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
