"""Multi-task vs single-task on ELPV solar cells: does a second, honestly derived task help the defect task?

    cpujob python benchmarks/multitask_elpv.py [--out DIR] [--per-class 100] [--epochs 6] [--image-size 64]
        [--seeds 3] [--arms single multi multi_unc pre_single pre_multi]

ELPV (2,624 grey 300x300 cells): the main task is the defect label (defect probability >= 0.5); the
second task is the cell type (mono vs poly), a label of the same cells that the dataset ships.
A fixed test split of 200 cells per defect class never enters training (so accuracy there is
balanced accuracy). Per seed, `--per-class` cells per defect class are drawn from the rest: the
labelled budget. EfficientNet-Lite0 from ImageNet, fine-tuned (`transfer.strategy=finetune`),
AdamW, the same epochs, batch size and lr in every arm:

    single      vt train classification: defect only
    multi       vt train multitask: defect + type on the same cells (round robin, fixed weights 1:1)
    multi_unc   the same with multitask.balance=uncertainty (Kendall et al. 2018)
    pre_single  defect fine-tune (as `single`) from model.weights = the backbone of a single-task
                defect run on a disjoint pool of --pool-per-class cells per class (seed 0)
    pre_multi   the same from the backbone file (RUN/backbone.safetensors) of a multitask
                defect + type run on that pool

Reported: the defect accuracy on the test split at the LAST epoch (no selection on test), mean and
std over seeds; the best-epoch number is kept in the JSON but is selected on the test split.
Writes OUT/results.json (and prints a table).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TEST_PER_CLASS = 200
CELLS = ""   # the folder of cell PNGs (the CSVs name files relative to it)


def load_cells(out: Path, size: int) -> tuple[Path, list[str], np.ndarray, np.ndarray]:
    """(the folder, PNG names of every cell at `size` px, defect labels 0/1, types 'mono'/'poly')."""
    from elpv_dataset.utils import load_dataset
    from PIL import Image

    images, prob, types = load_dataset()
    folder = out / f"cells-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"cell_{i:04d}.png"
        if not p.exists():
            Image.fromarray(np.asarray(im)).resize((size, size), Image.BICUBIC).save(p)
        paths.append(p.name)
    return folder, paths, (np.asarray(prob) >= 0.5).astype(np.int64), np.asarray(types).astype(str)


def write_csv(path: Path, paths: list[str], labels: list[str]) -> str:
    path.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in zip(paths, labels)))
    return str(path)


def draw(rng: np.random.Generator, pool: np.ndarray, y: np.ndarray, per_class: int) -> np.ndarray:
    return np.sort(np.concatenate([rng.choice(pool[y[pool] == c], per_class, replace=False) for c in (0, 1)]))


def entry(name: str, train_csv: str, val_csv: str, classes: list[str], weight: float = 1.0) -> dict:
    return {"name": name, "task": "classification", "weight": weight,
            "data": {"format": "csv", "root": CELLS, "train": {"annotations": train_csv},
                     "val": {"annotations": val_csv},
                     "classes": classes, "crop_scale": 0.6, "vflip": True}}


def run(kind: str, out_dir: Path, common: list[str], *, defect: tuple[str, str], type_: tuple[str, str] | None,
        weights: str = "imagenet", balance: str = "fixed") -> dict:
    """One run (reused when its summary exists); -> {last, best, epochs, wall_s, backbone}."""
    import vision_transfer as vt

    done = out_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    overrides = [*common, f"run.out_dir={out_dir}", f"model.weights={weights}"]
    if kind == "single":
        res = vt.train("classification", overrides=[*overrides, "data.format=csv",
                                                     f"data.train.annotations={defect[0]}",
                                                     f"data.val.annotations={defect[1]}", "data.classes=[ok, defect]",
                                                     f"data.root={CELLS}",
                                                     "data.crop_scale=0.6", "data.vflip=true"])
        key = "accuracy"
    else:
        tasks = [entry("defect", *defect, ["ok", "defect"])]
        if type_:
            tasks.append(entry("type", *type_, ["mono", "poly"]))
        res = vt.train("multitask", config={"multitask": {"tasks": tasks, "balance": balance,
                                                          "monitor": "defect/accuracy"}}, overrides=overrides)
        key = "defect/accuracy"
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    backbone = out_dir / "backbone.safetensors"
    if kind == "single":   # a single-task run writes no backbone file: the same writer, for pre_single
        from vision_transfer.pretrain.export import save_backbone
        from vision_transfer.task import find_backbone

        save_backbone(find_backbone(res.model), backbone, image_size=0, method="single-task")
    result = {"last": rows[-1][key], "best": max(r[key] for r in rows), "epochs": len(rows),
              "type_last": rows[-1].get("type/accuracy"), "wall_s": round(time.perf_counter() - t0, 1),
              "backbone": str(backbone)}
    done.write_text(json.dumps(result, indent=2))
    return result


def gradient_cosine(defect_csv: str, type_csv: str, *, image_size: int, batches: int = 6, batch_size: int = 32) -> dict:
    """Do the two tasks' gradients on the shared encoder point the same way? The cosine between the
    defect loss's and the type loss's gradient on the backbone, per batch of the labelled cells, at
    ImageNet init (freshly initialised heads; seed 0)."""
    import torch

    from vision_transfer.backbones import create_backbone
    from vision_transfer.config import build_config
    from vision_transfer.defaults import resolve_defaults
    from vision_transfer.task import get_task

    torch.manual_seed(0)
    task = get_task("classification")
    bb = create_backbone("tf_efficientnet_lite0", weights="imagenet")
    models, loaders = [], []
    for csv, classes in ((defect_csv, ["ok", "defect"]), (type_csv, ["mono", "poly"])):
        cfg = resolve_defaults(build_config("classification", {"data": {"format": "csv", "root": CELLS,
                               "train": {"annotations": csv}, "classes": classes, "val_split": 0}}), task)
        splits = task.build_datasets(data=cfg.data, image_size=image_size, preprocessing=bb.preprocessing, seed=0,
                                     augment=False)
        models.append(task.build_model(backbone=bb, num_classes=2, head="linear"))
        loaders.append(torch.utils.data.DataLoader(splits.train, batch_size=batch_size, shuffle=True,
                                                   generator=torch.Generator().manual_seed(0), collate_fn=task.collate))
    params = [p for p in bb.parameters() if p.requires_grad]
    cosines = []
    for (b1, b2), _ in zip(zip(*loaders), range(batches)):
        grads = []
        for m, b in zip(models, (b1, b2)):
            m.train()
            loss = task.train_step(m, b)["loss"]
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
        cosines.append(float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)))
    return {"cosines": cosines, "mean": float(np.mean(cosines)), "where": "ImageNet init, seed-0 budget cells, "
            f"{len(cosines)} batches of {batch_size}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-multitask-elpv")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--pool-per-class", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=["single", "multi", "multi_unc", "pre_single", "pre_multi"])
    ap.add_argument("--results", default=None, help="also write the results JSON here")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global CELLS
    folder, paths, y, types = load_cells(out, args.image_size)
    CELLS = str(folder)
    p = np.asarray(paths)
    names = np.array(["ok", "defect"])
    rng = np.random.default_rng(0)
    test = draw(rng, np.arange(len(y)), y, TEST_PER_CLASS)
    rest = np.setdiff1d(np.arange(len(y)), test)
    pretrain_pool = draw(rng, rest, y, args.pool_per_class)
    budget_pool = np.setdiff1d(rest, pretrain_pool)
    csv = out / "csv"
    csv.mkdir(exist_ok=True)
    test_defect = write_csv(csv / "test_defect.csv", list(p[test]), list(names[y[test]]))
    test_type = write_csv(csv / "test_type.csv", list(p[test]), list(types[test]))
    common = [f"train.epochs={args.epochs}", f"train.image_size={args.image_size}",
              f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", "transfer.strategy=finetune",
              "train.device=cpu", "data.num_workers=0", "run.tensorboard=false", "model.backbone=tf_efficientnet_lite0"]
    results: dict = {"config": vars(args), "test_cells": len(test), "test_per_class": TEST_PER_CLASS,
                     "test_type_counts": {t: int((types[test] == t).sum()) for t in ("mono", "poly")},
                     "metric": "defect accuracy on the balanced test split at the last epoch", "arms": {}}
    pre: dict[str, str] = {}
    if {"pre_single", "pre_multi"} & set(args.arms):
        pd = write_csv(csv / "pool_defect.csv", list(p[pretrain_pool]), list(names[y[pretrain_pool]]))
        pt = write_csv(csv / "pool_type.csv", list(p[pretrain_pool]), list(types[pretrain_pool]))
        for kind, key in (("single", "pre_single"), ("multi", "pre_multi")):
            if key in args.arms:
                r = run(kind, out / f"pretrain-{kind}", [*common, "train.seed=0"], defect=(pd, test_defect),
                        type_=(pt, test_type) if kind == "multi" else None)
                pre[key] = r["backbone"]
                results[f"{key}_pretrain_run"] = r
    for arm in args.arms:
        scores, rows = [], []
        for seed in range(args.seeds):
            idx = draw(np.random.default_rng(100 + seed), budget_pool, y, args.per_class)
            d = write_csv(csv / f"s{seed}_defect.csv", list(p[idx]), list(names[y[idx]]))
            t = write_csv(csv / f"s{seed}_type.csv", list(p[idx]), list(types[idx]))
            kind = "multi" if arm.startswith("multi") else "single"
            r = run(kind, out / f"{arm}-s{seed}", [*common, f"train.seed={seed}"], defect=(d, test_defect),
                    type_=(t, test_type) if kind == "multi" else None, weights=pre.get(arm, "imagenet"),
                    balance="uncertainty" if arm == "multi_unc" else "fixed")
            scores.append(r["last"])
            rows.append(r)
        results["arms"][arm] = {"mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1)),
                                "scores": scores, "runs": rows}
        print(f"{arm:<11} defect acc {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f}  {scores}", flush=True)
        if arm == "multi" and "gradient_cosine" not in results:
            try:
                results["gradient_cosine"] = gradient_cosine(str(csv / "s0_defect.csv"), str(csv / "s0_type.csv"),
                                                             image_size=args.image_size)
                print(f"gradient cosine defect vs type on the encoder: {results['gradient_cosine']['mean']:.3f}",
                      flush=True)
            except Exception as e:  # noqa: BLE001 - a diagnostic: never lose the results for it
                results["gradient_cosine"] = {"error": repr(e)}
        text = json.dumps(results, indent=2)
        (out / "results.json").write_text(text)
        if args.results:
            Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
