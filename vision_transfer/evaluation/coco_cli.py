"""`vt eval detection --gt GT.json --predictions RESULTS.json`: model-free COCO evaluation.

Imports only the standard library at module level; evaluation pulls in numpy and the COCO
backend, the table rich. Never torch: this path must start fast (tests check sys.modules).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .coco import METRIC_NAMES, default_backend, evaluate_coco


def default_out_dir(predictions: str | os.PathLike) -> Path:
    """`results.json` -> `results_eval/` in the same folder."""
    p = Path(predictions)
    return p.with_name(p.stem + "_eval")


def eval_results_file(*, gt: str | os.PathLike, predictions: str | os.PathLike, out: str | os.PathLike | None = None,
                      iou_type: str = "bbox", backend: str | None = None) -> int:
    """Score a COCO results file against COCO ground truth and write a report; returns exit status 0.

    Args:
        gt: COCO ground-truth JSON (images, annotations, categories).
        predictions: COCO results JSON, a list of `{"image_id", "category_id", "bbox": [x, y, w, h],
            "score"}` (plus a compressed-RLE `"segmentation"` for segm), from any tool.
        out: output folder; default: `<predictions stem>_eval/` next to the predictions file
            (`runs/results.json` -> `runs/results_eval/`).
        iou_type: "bbox" or "segm".
        backend: "faster-coco-eval" (default when installed) or "pycocotools" (the reference; same numbers).

    Writes `OUT/metrics.json` (`AP` ... `ARl` and `per_class_AP` keyed by category name),
    `OUT/report.md` and `OUT/report.html` (summary, per-class table, per-class precision-recall
    curves), and prints the numbers as a rich table. Bad input raises a one-line `VTError`.
    """
    backend = backend or default_backend()
    t0 = time.perf_counter()
    result = evaluate_coco(gt, predictions, iou_type=iou_type, backend=backend)
    elapsed = time.perf_counter() - t0
    metrics = {k: result[k] for k in METRIC_NAMES}
    metrics["per_class_AP"] = result["per_class_AP"]
    counts = result["counts"]
    details = {"ground truth": os.fspath(gt), "results": os.fspath(predictions), "IoU type": iou_type,
               "backend": backend, "images": counts["images"], "categories": counts["categories"],
               "ground-truth objects": f"{counts['gt']} (+ {counts['crowd']} crowd regions: detections on them count neither way)",
               "detections": counts["detections"], "evaluation time": f"{elapsed:.2f} s"}
    out_dir = Path(out) if out else default_out_dir(predictions)

    from .report import print_metrics_table, write_report

    written = write_report(out_dir, task="detection", metrics=metrics, classes=list(result["per_class_AP"]),
                           pr_curves=result["pr_curves"], details=details,
                           title=f"COCO {iou_type} evaluation of {Path(predictions).name}")
    print_metrics_table(metrics, title=f"COCO {iou_type} ({backend}, {elapsed:.2f} s)")
    print(f"wrote {written['metrics']}, {written['markdown'].name}, {written['html'].name}")
    return 0
