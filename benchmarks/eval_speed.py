"""Whole-process speed of `vt eval detection --gt --predictions` vs a plain pycocotools script.

Generates a COCO set (default 3,000 images, about 18k boxes over 80 non-contiguous category ids,
crowd regions, every object size) and detections that look like a detector's (jittered boxes
with scores that follow their quality, duplicates, wrong classes, background boxes), then runs,
alternately and each in a fresh process:

  ours:        vt eval detection --gt GT --predictions RESULTS --out DIR   (faster-coco-eval backend)
  pycocotools: python -c "COCO(gt); loadRes; COCOeval evaluate / accumulate / summarize"

and prints both wall times (best of --repeats), the ratio ours / pycocotools (goal <= 0.5), and
the largest difference of the twelve numbers (must be <= 1e-4).

    python benchmarks/eval_speed.py [--images 3000] [--repeats 3] [--backend faster-coco-eval]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # 80 ids, as COCO

PYCOCOTOOLS_SCRIPT = """
import json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt = COCO(sys.argv[1])
ev = COCOeval(gt, gt.loadRes(sys.argv[2]), "bbox")
ev.evaluate(); ev.accumulate(); ev.summarize()
print("STATS", json.dumps([float(s) for s in ev.stats]))
"""


def make_dataset(n_images: int, seed: int = 0) -> tuple[dict, list]:
    """About 6 objects an image, 1,000 images take ~0.5 s to generate."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for iid in range(1, n_images + 1):
        W, H = int(rng.choice([640, 480])), int(rng.choice([480, 427]))
        images.append({"id": iid, "width": W, "height": H, "file_name": f"{iid:06d}.jpg"})
        n = int(rng.poisson(6))
        size = np.exp(rng.uniform(np.log(8), np.log(min(W, H) * 0.9), n))  # log-uniform: all area ranges
        wh = size[:, None] * rng.uniform(0.6, 1.4, (n, 2))
        wh = np.minimum(wh, [W - 1, H - 1])
        xy = rng.uniform(0, 1, (n, 2)) * ([W, H] - wh)
        cats = rng.choice(COCO_IDS[:60], n)  # the last 20 ids: categories without ground truth
        for (x, y), (w, h), c in zip(xy, wh, cats):
            crowd = int(rng.random() < 0.01)
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": int(c), "bbox": [x, y, w, h],
                         "area": float(w * h * 0.8), "iscrowd": crowd, "segmentation": []})
            for k in range(1 + int(rng.random() < 0.2)):  # a hit and sometimes a duplicate
                if rng.random() > 0.9:
                    break
                q = rng.uniform(0.02, 0.25)  # box noise relative to its size; worse boxes score lower
                j = rng.normal(0, q, 4) * [w, h, w, h]
                cls = int(c) if rng.random() < 0.9 else int(rng.choice(COCO_IDS))
                score = np.clip(1.0 - 2.5 * q + rng.normal(0, 0.15) - 0.3 * k, 0.01, 1.0)
                dets.append({"image_id": iid, "category_id": cls, "score": round(float(score), 5),
                             "bbox": [round(float(v), 2) for v in (x + j[0], y + j[1], abs(w + j[2]), abs(h + j[3]))]})
        for _ in range(int(rng.poisson(12))):  # background
            w, h = rng.uniform(6, W / 2), rng.uniform(6, H / 2)
            dets.append({"image_id": iid, "category_id": int(rng.choice(COCO_IDS)),
                         "score": round(float(rng.beta(1.2, 6)), 5),
                         "bbox": [round(float(v), 2) for v in (rng.uniform(0, W - w), rng.uniform(0, H - h), w, h)]})
        for a in anns[-n:] if n else []:
            a["bbox"] = [round(float(v), 2) for v in a["bbox"]]
    cats = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in COCO_IDS]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return dt, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", default="faster-coco-eval", choices=("faster-coco-eval", "pycocotools"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        gt, dets = make_dataset(args.images)
        (tmp / "gt.json").write_text(json.dumps(gt))
        (tmp / "results.json").write_text(json.dumps(dets))
        print(f"data: {len(gt['images'])} images, {len(gt['annotations'])} boxes "
              f"({sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(dets)} detections, "
              f"{len(gt['categories'])} categories (generated in {time.perf_counter() - t0:.1f} s)")
        vt = [shutil.which("vt")] if shutil.which("vt") else [sys.executable, "-m", "vision_transfer.cli"]
        ours_cmd = [*vt, "eval", "detection", "--gt", str(tmp / "gt.json"), "--predictions",
                    str(tmp / "results.json"), "--out", str(tmp / "out"), "--backend", args.backend]
        ref_cmd = [sys.executable, "-c", PYCOCOTOOLS_SCRIPT, str(tmp / "gt.json"), str(tmp / "results.json")]
        ours_t, ref_t, ref_out = [], [], ""
        for r in range(args.repeats):  # alternate, so that machine load hits both alike
            dt, ref_out = timed(ref_cmd)
            ref_t.append(dt)
            ours_t.append(timed(ours_cmd)[0])
            print(f"  run {r + 1}: pycocotools {ref_t[-1]:.2f} s, vt eval {ours_t[-1]:.2f} s")
        ref = json.loads(ref_out.split("STATS", 1)[1])
        ours = json.loads((tmp / "out" / "metrics.json").read_text())
        diff = max(abs(ours[k] - v) for k, v in zip(METRIC_NAMES, ref))
        print(f"pycocotools script:   {min(ref_t):.2f} s (best of {args.repeats})")
        print(f"vt eval detection:    {min(ours_t):.2f} s (best of {args.repeats}, backend {args.backend}, "
              "incl. validation and report)")
        print(f"ratio vt / pycocotools: {min(ours_t) / min(ref_t):.2f} (goal <= 0.5)")
        print(f"max |difference| of the twelve numbers: {diff:.2e} (must be <= 1e-4) -> "
              f"{'OK' if diff <= 1e-4 else 'MISMATCH'}")
        print("  " + "  ".join(f"{k}={ours[k]:.4f}" for k in METRIC_NAMES))
        if diff > 1e-4:
            sys.exit(1)


if __name__ == "__main__":
    main()
