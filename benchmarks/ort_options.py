"""ONNX Runtime session options against eager PyTorch, for the classification default (Lite0 + linear).

The latency table's ONNX Runtime column uses `vt`'s session (`export.runtime.onnx_session`: all
graph optimisations, intra-op threads = torch's). This asks whether other CPU session options
would move the ratio to eager: the basic / extended optimisation levels, sequential vs parallel
execution, spinning intra-op threads off, no memory arena / pattern. All variants run the same
exported file (static shape, as latency.py exports), interleaved round by round with eager.

    python benchmarks/ort_options.py [--size 224] [--batch 16] [--rounds 10] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def sessions(path: Path, threads: int) -> dict:
    import onnxruntime as ort

    L = ort.GraphOptimizationLevel

    def make(level=L.ORT_ENABLE_ALL, mode=ort.ExecutionMode.ORT_SEQUENTIAL, spin: bool = True,
             arena: bool = True, inter: int = 0):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, inter
        o.graph_optimization_level, o.execution_mode = level, mode
        o.enable_cpu_mem_arena = o.enable_mem_pattern = arena
        if not spin:
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])

    return {"ort_vt_default": make(),   # what onnx_session() builds (sequential is ORT's default)
            "ort_basic": make(L.ORT_ENABLE_BASIC),
            "ort_extended": make(L.ORT_ENABLE_EXTENDED),
            "ort_parallel": make(mode=ort.ExecutionMode.ORT_PARALLEL, inter=1),
            "ort_no_spin": make(spin=False),
            "ort_no_arena": make(arena=False)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("VT_CPUJOB_THREADS", 2)))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from latency import build   # benchmarks/ is on sys.path when run as a script

    from vision_transfer.export.exporter import _export_onnx, export_spec_for

    model, meta, task = build("classification", args.size)
    spec = export_spec_for(task, model, meta=meta, image_size=args.size, batch=args.batch, dynamic=False)
    x = spec.inputs[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lite0.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export_onnx(spec, path)
        sess = sessions(path, args.threads)
        feed = {sess["ort_vt_default"].get_inputs()[0].name: x.numpy()}
        with torch.inference_mode():
            ref = model(x).numpy()
        fns = {"eager": lambda: model(x)}
        for name, s in sess.items():
            assert np.abs(s.run(None, feed)[0] - ref).max() < 1e-3, name
            fns[name] = (lambda s=s: s.run(None, feed))
        times: dict[str, list[float]] = {k: [] for k in fns}
        with torch.inference_mode():
            for fn in fns.values():
                fn()
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
    eager = args.batch / float(np.median(times["eager"]))
    rows = []
    print(f"Lite0 classifier, {args.size} px, batch {args.batch}, {args.threads} threads, {args.rounds} rounds")
    print("| runtime | img/s | p50 ms | p95 ms | vs eager |")
    print("|---|---|---|---|---|")
    for k, t in times.items():
        t = np.array(t)
        ips = args.batch / float(np.median(t))
        rows.append({"runtime": k, "img_s": ips, "p50_ms": float(np.percentile(t, 50) * 1e3),
                     "p95_ms": float(np.percentile(t, 95) * 1e3), "vs_eager": ips / eager,
                     "size": args.size, "batch": args.batch, "threads": args.threads})
        r = rows[-1]
        print(f"| {k} | {ips:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['vs_eager']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
