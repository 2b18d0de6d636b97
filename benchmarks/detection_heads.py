"""Every detection head on the same data, defaults only: AP, AP50, training time, inference img/s.

Data (`--data`): `synthetic`: generated 128-px tiles with up to twelve small shapes each (exact
boxes; the tiles of benchmarks/detection_vs_torchvision.py), 16 train, 8 val; `real`: the 128-px
tiles of scikit-image's IHC and Hubble photographs with pseudo-label boxes (benchmarks/real_tiles.py),
24 train, 8 val. Each head: EfficientNet-Lite0 (packaged ImageNet weights), `train.image_size=256`
(`--image-size`, every head resizes to it), batch 4, the task's default lr and schedule, CPU.
After training, best.pt is exported to ONNX (`vt export`, parity checked) and timed on the val
tiles one image at a time, eager PyTorch and ONNX Runtime side by side, same threads.

`--phase train` only trains (run two in parallel on a loaded machine, one thread each);
`--phase time` only times runs already trained (run it alone, all cores, so that the speed
columns compare); `--phase all` does both. Each run's row lands in OUT/HEAD/SEED/bench.json and
the table is read from those.

    python benchmarks/detection_heads.py [--data synthetic|real] [--heads yolo fcos ...] [--epochs 20]
        [--seeds 0] [--threads N] [--image-size 256] [--phase all|train|time] [--out /tmp/det-heads]
        [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

HEADS = ("yolo", "fcos", "ssdlite", "retinanet", "fasterrcnn")


def make_data(out: Path, kind: str = "synthetic") -> dict:
    """Writes the data once (parallel invocations sharing `out` then only read it)."""
    done = out / "paths.json"
    if done.is_file():
        return json.loads(done.read_text())
    if kind == "real":
        from real_tiles import write_real_tiles   # benchmarks/ is on sys.path when run as a script

        paths = write_real_tiles(out)
    else:
        from vision_transfer.tasks.detection.synthetic import write_scenes

        kw = dict(size=128, max_objects=12, min_radius=4, max_radius=9)
        paths = {"train": write_scenes(out / "train", n=16, seed=1, **kw)["coco"],
                 "val": write_scenes(out / "val", n=8, seed=2, **kw)["coco"]}
    done.write_text(json.dumps(paths))
    return paths


def train_head(head: str, data: dict, out: Path, *, epochs: int, seed: int, image_size: int) -> dict:
    import vision_transfer.api as vt

    overrides = {"data.format": "coco", "data.train.images": data["train"]["images"],
                 "data.train.annotations": data["train"]["annotations"], "data.val.images": data["val"]["images"],
                 "data.val.annotations": data["val"]["annotations"], "model.backbone": "tf_efficientnet_lite0",
                 "model.weights": "imagenet", "model.head": head, "transfer.strategy": "finetune",
                 "train.epochs": epochs, "train.image_size": image_size, "train.batch_size": 4, "train.device": "cpu",
                 "train.seed": seed, "run.out_dir": str(out), "run.tensorboard": False}
    run = vt.train("detection", overrides=overrides)
    return {"AP": run.metrics["AP"], "AP50": run.metrics["AP50"], "train_time_s": run.train_time_s}


def time_inference(ckpt: Path, images: list[Path], out: Path, repeats: int = 3) -> dict:
    """img/s of eager PyTorch and of the exported ONNX model, one image at a time, interleaved."""
    import torch

    from vision_transfer.data.image import read_image
    from vision_transfer.engine.checkpoint import load_model
    from vision_transfer.export.exporter import export_checkpoint
    from vision_transfer.export.runtime import load_onnx

    side = export_checkpoint("detection", checkpoint=ckpt, fmt="onnx", out=out / "model.onnx")
    eager, _ = load_model(ckpt, task="detection")
    ort, _ = load_onnx(out / "model.onnx", task="detection")
    xs = [torch.from_numpy(read_image(p)).permute(2, 0, 1).float().div(255) for p in images]
    rates: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, model in (("eager", eager), ("onnxruntime", ort)):
                model([xs[0]])   # warm-up
                t0 = time.perf_counter()
                for x in xs:
                    model([x])
                rates[name].append(len(xs) / (time.perf_counter() - t0))
    return {"eager_img_s": statistics.median(rates["eager"]), "ort_img_s": statistics.median(rates["onnxruntime"]),
            "parity": side["parity"]}


def main() -> None:  # noqa: C901
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=("synthetic", "real"), default="synthetic")
    ap.add_argument("--heads", nargs="+", default=list(HEADS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("VT_CPUJOB_THREADS", 2)))
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--phase", choices=("all", "train", "time"), default="all")
    ap.add_argument("--out", default="/tmp/det-heads")
    ap.add_argument("--json", default=None, help="also write every run's row here")
    args = ap.parse_args()
    import torch

    from vision_transfer.errors import VTError

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = make_data(out / "data", args.data)
    images = sorted(Path(data["val"]["images"]).glob("*.png"))
    for head in args.heads:
        for seed in args.seeds:
            run_dir = out / head / str(seed)
            bench, done = run_dir / "bench.json", run_dir / "summary.json"
            row = json.loads(bench.read_text()) if bench.is_file() else {}
            if not row and done.is_file():   # trained by an earlier invocation: reuse its run
                summary = json.loads(done.read_text())
                row = {k: summary["metrics"][k] for k in ("AP", "AP50")} | {"train_time_s": summary["train_time_s"]}
            if not row and args.phase != "time":
                row = train_head(head, data, run_dir, epochs=args.epochs, seed=seed, image_size=args.image_size)
            if not row:
                continue
            row.update({"epochs": args.epochs, "image_size": args.image_size, "data": args.data,
                        "train_threads": row.get("train_threads", args.threads)})
            if "ort_img_s" not in row and args.phase != "train":
                try:
                    row.update(time_inference(run_dir / "checkpoints" / "best.pt", images, run_dir))
                except VTError as e:   # recorded, not hidden: the table shows the head without ONNX numbers
                    row.update({"eager_img_s": float("nan"), "ort_img_s": float("nan"), "parity": str(e)})
                row["time_threads"] = args.threads
            tmp = bench.with_suffix(".tmp")
            tmp.write_text(json.dumps(row, indent=2))
            tmp.replace(bench)   # atomic: a parallel invocation may be reading the rows
            print(f"{head}/{seed}", json.dumps(row), flush=True)
    results = {f"{b.parent.parent.name}/{b.parent.name}": json.loads(b.read_text())
               for b in sorted(out.glob("*/*/bench.json"))}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print_table(results)


def print_table(results: dict) -> None:
    """AP and training time over every seed; speed over the runs that were timed (`--phase time
    --seeds 0` is enough: inference cost does not depend on the seed's weights)."""
    print("| head | seeds | AP | AP50 | train s | timed | eager img/s | ORT img/s | ORT / eager |")
    print("|---|---|---|---|---|---|---|---|---|")
    heads = sorted({k.split("/")[0] for k in results}, key=lambda h: HEADS.index(h) if h in HEADS else 99)
    for h in heads:
        rows = [v for k, v in results.items() if k.split("/")[0] == h]
        timed = [r for r in rows if "ort_img_s" in r]

        def ms(key: str, fmt: str = ".3f", rows: list = rows) -> str:
            vals = [r[key] for r in rows]
            if not vals:
                return "-"
            spread = f" ± {statistics.stdev(vals):{fmt}}" if len(vals) > 1 else ""
            return f"{statistics.mean(vals):{fmt}}{spread}"
        ratio = f"{statistics.mean(r['ort_img_s'] / r['eager_img_s'] for r in timed):.2f}" if timed else "-"
        print(f"| {h} | {len(rows)} | {ms('AP')} | {ms('AP50')} | {ms('train_time_s', '.0f')} | {len(timed)} | "
              f"{ms('eager_img_s', '.1f', timed)} | {ms('ort_img_s', '.1f', timed)} | {ratio} |")


if __name__ == "__main__":
    main()
