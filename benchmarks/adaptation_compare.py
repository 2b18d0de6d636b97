"""The shared loop of the domain-adaptation benchmarks (domain_adaptation_elpv.py, domain_adaptation_digits.py).

A pair's data lives in `DATA/SRC/{train,val}/CLASS/*.png` (labelled source), `DATA/TGT/unlabelled/**.png`
(the target images a method may see) and `DATA/TGT/test/CLASS/*.png` (labelled target, scored only). Every
method gets the same budget (epochs over the labelled source images, batch, lr, image size); dann / cdan /
mmd also see one target batch per step. adabn is post-hoc on the source-only run's best.pt (`vt adapt`);
`METHOD+adabn` applies it to METHOD's best.pt.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch


def add_arguments(ap: argparse.ArgumentParser, *, epochs: int, batch: int, size: int, per_class: int | None,
                  diag: int) -> None:
    ap.add_argument("--methods", nargs="+", default=["none", "adabn", "dann"],
                    help="none | adabn | dann | cdan | mmd, optionally @WEIGHT (adapt.weight), e.g. dann@0.3, "
                         "and +adabn (AdaBN on that run's best.pt), e.g. dann+adabn")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--lr", type=float, default=None, help="train.lr (default: the task's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-class", type=int, default=per_class, help="labelled source images per class (balanced)")
    ap.add_argument("--diag", type=int, default=diag, help="images per domain for SND and the A-distance")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config keys for every run")


def balanced_accuracy(metrics: dict) -> float:
    per = metrics.get("per_class") or {}
    recalls = [v["recall"] for v in per.values() if v.get("support", 0) > 0]
    return float(np.mean(recalls)) if recalls else float("nan")


def train_run(data: Path, src: str, tgt: str, method: str, seed: int, out: Path, args, augment: dict) -> dict:
    """One run (skipped when out/summary.json exists): its target/source numbers and per-epoch curve."""
    import vision_transfer as vt

    trained, adabn = trained_method(method), method == "adabn" or method.endswith("+adabn")
    over = {"data.format": "folder", "data.root": str(data / src), **augment, "data.num_workers": 0,
            "train.epochs": args.epochs, "train.batch_size": args.batch,
            "train.image_size": args.size, "train.seed": seed, "train.device": "cpu", "run.tensorboard": False,
            "run.out_dir": str(out), "adapt.method": trained.split("@")[0],
            "adapt.weight": float(trained.split("@")[1]) if "@" in trained else 1.0,
            "adapt.target.images": str(data / tgt / "unlabelled"), "adapt.target.val": str(data / tgt / "test"),
            "adapt.diagnostic_images": args.diag, "data.max_per_class": args.per_class}
    if args.lr is not None:
        over["train.lr"] = args.lr
    over.update(kv.split("=", 1) for kv in args.set)
    if not (out / "summary.json").is_file():
        vt.train("classification", overrides=over)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    res = {"source_accuracy": summary["metrics"]["accuracy"], "target_accuracy": summary["target_metrics"]["accuracy"],
           "target_balanced": balanced_accuracy(summary["target_metrics"]),
           "pad": summary.get("adapt", {}).get("proxy_a_distance"), "train_time_s": summary["train_time_s"],
           "epochs": [{"epoch": r["epoch"], "source_acc": r["accuracy"], "target_acc": r["target_accuracy"],
                       "snd": r.get("snd"), "domain_acc": r.get("domain_acc")} for r in rows]}
    if adabn:
        res.update(adabn_posthoc(data, tgt, out))
    return res


def trained_method(method: str) -> str:
    """The training run a method name needs: adabn adapts the source-only run, X+adabn run X."""
    return "none" if method == "adabn" else method.removesuffix("+adabn")


def adabn_posthoc(data: Path, tgt: str, out: Path) -> dict:
    """`vt adapt` on the run's best.pt, scored on the target test split (cached in out/adabn.json)."""
    import vision_transfer as vt
    from vision_transfer.adapt import adapt_checkpoint

    cache = out / "adabn.json"
    if not cache.is_file():
        ckpt = adapt_checkpoint(out / "checkpoints" / "best.pt", target=data / tgt / "unlabelled",
                                out=out / "adabn.pt", device="cpu")
        m = vt.evaluate("classification", checkpoint=ckpt, out=out / "adabn_eval",
                        overrides={"data.val.images": str(data / tgt / "test"), "data.num_workers": 0})
        cache.write_text(json.dumps({"target_accuracy": m["accuracy"], "target_balanced": balanced_accuracy(m)}))
    return json.loads(cache.read_text())


def selection_report(runs: list[dict]) -> dict:
    """Target accuracy of the epoch each criterion picks, vs the best epoch in hindsight (oracle)."""
    out = {"source_val": [], "snd": [], "oracle": [], "last": []}
    for r in runs:
        ep = r["epochs"]
        out["source_val"].append(max(ep, key=lambda e: e["source_acc"])["target_acc"])
        if all(e["snd"] is not None for e in ep):
            out["snd"].append(max(ep, key=lambda e: e["snd"])["target_acc"])
        out["oracle"].append(max(e["target_acc"] for e in ep))
        out["last"].append(ep[-1]["target_acc"])
    return {k: _ms(v) for k, v in out.items() if v}


def _ms(v: list[float]) -> dict:
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
            "values": [round(x, 4) for x in v]}


def compare(data: Path, pairs: list[str], args, *, out: Path, augment: dict) -> dict:
    """Every method x seed on every "SRC:TGT" pair; writes OUT/results.json (as it goes) and results.md."""
    torch.set_num_threads(args.threads)   # on a shared 2-core machine 2 threads ran 10x slower than 1
    results: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "augment": augment, "pairs": {}}
    for pair in pairs:
        src, tgt = pair.split(":")
        per: dict = {}
        for method in args.methods:
            run_name = trained_method(method)
            runs = [train_run(data, src, tgt, method, s, out / pair.replace(":", "_to_") / f"{run_name}_s{s}", args,
                              augment) for s in args.seeds]
            per[method] = {"target_accuracy": _ms([r["target_accuracy"] for r in runs]),
                           "target_balanced": _ms([r["target_balanced"] for r in runs]),
                           "source_accuracy": _ms([r["source_accuracy"] for r in runs]),
                           "pad": [r["pad"] for r in runs], "selection": selection_report(runs),
                           "train_time_s": _ms([r["train_time_s"] for r in runs]), "runs": runs}
            _print(pair, method, per[method])
            results["pairs"][pair] = per
            (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


def _print(pair: str, method: str, r: dict) -> None:
    t, b = r["target_accuracy"], r["target_balanced"]
    print(f"{pair:10s} {method:6s} target acc {t['mean']:.3f} +- {t['std']:.3f} balanced {b['mean']:.3f} +- "
          f"{b['std']:.3f} {t['values']}", flush=True)


def markdown(results: dict) -> str:
    lines = ["| pair | method | target accuracy | target balanced acc | source-val acc | PAD before -> after |",
             "|---|---|---|---|---|---|"]
    for pair, per in results["pairs"].items():
        for m, r in per.items():
            pads = [p for p in r["pad"] if p]
            pad = (f"{statistics.mean(p['before'] for p in pads):.2f} -> {statistics.mean(p['after'] for p in pads):.2f}"
                   if pads and "adabn" not in m else "-")
            f = lambda d: f"{d['mean']:.3f} +- {d['std']:.3f}"   # noqa: E731
            lines.append(f"| {pair} | {m} | {f(r['target_accuracy'])} | {f(r['target_balanced'])} | "
                         f"{f(r['source_accuracy'])} | {pad} |")
    return "\n".join(lines) + "\n"
