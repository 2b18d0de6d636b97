"""`vt demo`: the main job on real data, fully offline.

ELPV (Deitsch et al., 2019): 2,624 electroluminescence images of solar cells, each with an
expert's defect probability. Cells with probability >= 0.5 are "defective", the rest
"functional". The demo samples about a hundred labelled cells per class — the situation our users
are in — and compares, on the same split and budget:

1. a linear probe on the packaged ImageNet EfficientNet-Lite0 (frozen backbone, cached features),
2. a fine-tune of the same network,
3. the same network from random initialisation.

It prints a table (accuracy, macro-F1, seconds) and writes `demo.json`, `demo.md`, a bar chart
and one confusion matrix per run into the output folder. Deitsch et al. report 88.4 % for a
fine-tuned CNN trained on the whole dataset: the long-run anchor.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VTError

CLASSES = ("functional", "defective")


@dataclass(frozen=True)
class Budget:
    per_class_train: int
    per_class_val: int
    image_size: int
    epochs: int
    probe_epochs: int
    batch_size: int


# 160 px for 12 epochs rather than 128 px for 15: cracks are a few pixels wide in a 300 px cell. Measured
# with two threads on an idle machine (one run each): fine-tune 0.807 -> 0.817 (best epoch; mean of the
# last five epochs 0.792 -> 0.799), scratch 0.723 -> 0.697, the whole demo 3 min 07 s -> 3 min 47 s
FULL = Budget(per_class_train=100, per_class_val=150, image_size=160, epochs=12, probe_epochs=30, batch_size=16)
QUICK = Budget(per_class_train=50, per_class_val=60, image_size=96, epochs=5, probe_epochs=30, batch_size=16)


def elpv_root() -> Path:
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.origin:
        raise VTError('the demo needs the ELPV solar-cell images: pip install "vision-transfer[demo]" '
                      "(or: pip install elpv-dataset; data licence CC-BY-NC-SA-4.0)")
    return Path(spec.origin).parent / "data"


def materialise_elpv(cache: Path, budget: Budget, *, seed: int = 0) -> Path:
    """Write a stratified, seeded train/val image folder of ELPV cells below `cache`."""
    src = elpv_root()
    rows = [line.split() for line in (src / "labels.csv").read_text().splitlines() if line.strip()]
    by_class: dict[str, list[str]] = {c: [] for c in CLASSES}
    for path, prob, _kind in rows:
        by_class[CLASSES[int(float(prob) >= 0.5)]].append(path)
    root = cache / f"elpv-{budget.per_class_train}-{budget.per_class_val}-s{seed}"
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        paths = sorted(by_class[c])
        rng.shuffle(paths)
        chosen = {"train": paths[: budget.per_class_train],
                  "val": paths[budget.per_class_train: budget.per_class_train + budget.per_class_val]}
        for split, items in chosen.items():
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for p in items:
                shutil.copyfile(src / p, d / Path(p).name)
    (root / ".complete").write_text("ok\n")
    return root


def _runs(budget: Budget) -> list[tuple[str, dict]]:
    # Cracks are small: crops keep >= 80 % of the cell so that a defect is rarely cut away, and a
    # cell has no "up", so vertical flips and 90-degree turns are free extra data.
    common = {"model.backbone": "tf_efficientnet_lite0", "train.image_size": budget.image_size,
              "train.batch_size": budget.batch_size, "train.seed": 0, "data.crop_scale": 0.8,
              "data.vflip": True, "data.rotate90": True}
    # Channels-last on the CPU too: oneDNN's convolutions run ~1.4-1.5x faster on NHWC tensors
    # (benchmarks/demo_timing.py: one train epoch and one evaluation pass of the demo's fine-tune,
    # side by side), with the same arithmetic; the engine enables it by default only on CUDA.
    trained = {"train.channels_last": True}
    return [
        # probe_layers=auto: on ELPV the pooled stage-2 / all-stage features beat the deepest map
        # (0.820 vs 0.790 here, benchmarks/linear_probe_vs_sklearn.py): cells are far from ImageNet
        ("linear probe (ImageNet)", {**common, "model.weights": "imagenet", "transfer.strategy": "linear_probe",
                                     "transfer.probe_layers": "auto", "train.epochs": budget.probe_epochs}),
        ("fine-tune (ImageNet)", {**common, **trained, "model.weights": "imagenet", "transfer.strategy": "finetune",
                                  "train.epochs": budget.epochs, "train.lr": 1e-3}),
        ("from scratch", {**common, **trained, "model.weights": None, "transfer.strategy": "finetune",
                          "train.epochs": budget.epochs, "train.lr": 2e-3}),
    ]


def run_demo(*, quick: bool = False, out: str | os.PathLike = "vt-demo", device: str = "auto") -> list[dict]:
    from .api import train
    from .engine.logging import console
    from .files import write_json

    budget = QUICK if quick else FULL
    out = Path(out)
    cache = Path(os.environ.get("VT_CACHE_DIR", Path.home() / ".cache" / "vision_transfer"))
    data_root = materialise_elpv(cache, budget)
    console.print(f"[bold]ELPV solar cells[/bold]: {budget.per_class_train} labelled cells per class for training, "
                  f"{budget.per_class_val} per class held out; {budget.image_size} px; data in {data_root}")
    results = []
    for label, overrides in _runs(budget):
        console.rule(label)
        slug = label.split(" (")[0].replace(" ", "_").replace("-", "")
        t0 = time.perf_counter()
        run = train("classification", overrides={**overrides, "data.format": "folder", "data.root": str(data_root),
                                                 "train.device": device, "run.out_dir": str(out / slug),
                                                 "run.tensorboard": False})
        results.append({"run": label, "accuracy": run.metrics["accuracy"], "macro_f1": run.metrics["macro_f1"],
                        "seconds": round(time.perf_counter() - t0, 1), "best_epoch": run.best_epoch,
                        "confusion_matrix": run.metrics["confusion_matrix"], "folder": str(out / slug),
                        "curves": str(out / slug / "curves.png")})
    write_json(out / "demo.json", {"budget": budget.__dict__, "results": results})
    (out / "demo.md").write_text(_markdown(results, budget))
    _bar_chart(results, out / "demo.png")
    _print_table(results, console)
    console.print(f"results: {out / 'demo.md'}, chart: {out / 'demo.png'}; training curves and confusion matrices "
                  f"in each run folder ({', '.join(r['curves'] for r in results)})")
    return results


def _markdown(results: list[dict], budget: Budget) -> str:
    lines = [f"# vt demo: ELPV solar cells, {budget.per_class_train} train / {budget.per_class_val} val images "
             f"per class, {budget.image_size} px", "", "| run | accuracy | macro-F1 | seconds | curves |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['seconds']:.0f} | "
              f"[curves.png]({Path(r['curves']).relative_to(Path(r['folder']).parent).as_posix()}) |" for r in results]
    return "\n".join(lines) + "\n"


def _print_table(results: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="ELPV: functional vs defective")
    for col in ("run", "accuracy", "macro-F1", "seconds"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in results:
        table.add_row(r["run"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", f"{r['seconds']:.0f}")
    console.print(table)


def _bar_chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=120)
    names = [r["run"] for r in results]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["accuracy"] for r in results], 0.4, label="accuracy", color="#3b75af")
    ax.bar(x + 0.2, [r["macro_f1"] for r in results], 0.4, label="macro-F1", color="#ef8636")
    ax.axhline(0.884, color="grey", ls="--", lw=1)
    ax.text(len(names) - 0.5, 0.89, "Deitsch et al. 2019 (full data): 0.884", ha="right", fontsize=7, color="grey")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("ELPV solar cells: transfer vs scratch", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


__all__ = ["run_demo", "materialise_elpv", "FULL", "QUICK"]
