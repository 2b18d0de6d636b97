"""Inference latency: eager PyTorch, channels-last, TorchScript and ONNX Runtime, side by side.

For each task's default model (classification: Lite0 + linear at 224 px; segmentation: Lite0 +
U-Net at 256 px) and each detection head over Lite0 at 320 and 640 px: img/s and p50 / p95 ms
per batch at batch 1 and 16, one table with each runtime's img/s as a ratio of eager's. The
models are built untrained (speed does not depend on the weights) and exported the way `vt
export` does, parity checked. Runtimes are timed interleaved, round by round, so that a loaded
machine slows them alike; a detector's batch is a loop over images in every runtime (its
resize and NMS are per image).

    python benchmarks/latency.py [--models classification segmentation yolo fcos ssdlite retinanet fasterrcnn]
        [--sizes 320 640] [--batches 1 16] [--rounds 5] [--threads 2] [--json out.json]
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

RUNTIMES = ("eager", "channels_last", "torchscript", "onnxruntime")
DETECTION_HEADS = ("yolo", "fcos", "ssdlite", "retinanet", "fasterrcnn")
DEFAULT_SIZE = {"classification": 224, "segmentation": 256}


def build(name: str, size: int):
    """(model in eval mode, meta, task name) for a task default or a detection head."""
    import vision_transfer.api as vt
    from vision_transfer.task import find_backbone

    task = "detection" if name in DETECTION_HEADS else name
    kw = {"head": name, "image_size": size} if task == "detection" else {}
    model = vt.build_model(task, backbone="tf_efficientnet_lite0", weights=None, num_classes=3, **kw).eval()
    meta = {"preprocessing": find_backbone(model).preprocessing.to_dict(), "image_size": size,
            "classes": ["a", "b", "c"]}
    return model, meta, task


_EXPORTS: dict = {}   # (model, size) -> exported runtimes of a per-image graph (they do not depend on the batch)


def runners(name: str, size: int, batch: int, tmp: Path) -> tuple[dict, list]:
    """{runtime: callable(inputs)} and the inputs of one batch."""
    from vision_transfer.export.exporter import _export_onnx, _export_torchscript, check_parity, export_spec_for

    if (name, size) in _EXPORTS:
        model, cl_model, ort, ts, image = _EXPORTS[name, size]
    else:
        model, meta, task = build(name, size)
        spec = export_spec_for(task, model, meta=meta, image_size=size, batch=batch, dynamic=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ort = _export_onnx(spec, tmp / f"{name}-{size}-{batch}.onnx")
            ts = _export_torchscript(spec, tmp / f"{name}-{size}-{batch}.pt")
        check_parity(spec, ort)
        cl_model = build(name, size)[0].to(memory_format=torch.channels_last)
        cl_model.load_state_dict(model.state_dict())
        if spec.io == "batch":
            x = spec.inputs[0]
            x_cl = x.contiguous(memory_format=torch.channels_last)
            return {"eager": lambda: model(x), "channels_last": lambda: cl_model(x_cl),
                    "torchscript": lambda: ts(x), "onnxruntime": lambda: ort(x)}, [x]
        image = spec.inputs[0]
        _EXPORTS[name, size] = model, cl_model, ort, ts, image
    images = [image] * batch   # per-image graphs: a batch is a loop
    return {"eager": lambda: model(images), "channels_last": lambda: cl_model(images),
            "torchscript": lambda: [ts(im) for im in images], "onnxruntime": lambda: [ort(im) for im in images]}, images


def measure(fns: dict, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn()                                   # warm-up (allocations, ORT arena, JIT profiling)
        for _ in range(rounds):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["classification", "segmentation", *DETECTION_HEADS])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640], help="detection input sizes")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="rows are merged into this file after each model (same "
                    "model / px / batch / runtime replaced), so that an interrupted run keeps what it measured")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print("| model | px | batch | runtime | img/s | p50 ms | p95 ms | vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for size in [DEFAULT_SIZE[name]] if name in DEFAULT_SIZE else args.sizes:
                for batch in args.batches:
                    fns, _ = runners(name, size, batch, Path(tmp))
                    times = measure(fns, args.rounds)
                    eager = batch / float(np.median(times["eager"]))
                    for rt in RUNTIMES:
                        t = np.array(times[rt])
                        ips = batch / float(np.median(t))
                        row = {"model": name, "size": size, "batch": batch, "runtime": rt, "img_s": ips,
                               "p50_ms": float(np.percentile(t, 50) * 1e3), "p95_ms": float(np.percentile(t, 95) * 1e3),
                               "vs_eager": ips / eager}
                        rows.append(row)
                        print(f"| {name} | {size} | {batch} | {rt} | {ips:.1f} | {row['p50_ms']:.1f} | "
                              f"{row['p95_ms']:.1f} | {row['vs_eager']:.2f} |", flush=True)
                    if args.json:
                        save(rows, Path(args.json), threads=args.threads, rounds=args.rounds)


def save(rows: list[dict], path: Path, **extra) -> None:
    key = ("model", "size", "batch", "runtime")
    old = json.loads(path.read_text()) if path.is_file() else []
    new = {tuple(r[k] for k in key) for r in rows}
    merged = [r for r in old if tuple(r[k] for k in key) not in new] + [r | extra for r in rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    main()
