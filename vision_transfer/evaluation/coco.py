"""COCO evaluation of detection results (boxes or RLE masks) with pycocotools' numbers.

`evaluate_coco` runs the reference COCOeval (pycocotools) or faster-coco-eval, a C++ drop-in
that gives the same twelve numbers (tested to 1e-4 in tests/test_coco_eval.py) about five times
faster. Both libraries print to stdout; here they are silenced. Neither needs torch.

    >>> m = evaluate_coco("instances_val.json", "results.json")      # doctest: +SKIP
    >>> m["AP"], m["per_class_AP"]["person"]                          # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import VTError, did_you_mean
from .validate import load_json, validate_gt, validate_results

#: The twelve numbers of COCOeval.summarize(), in its order (AP at IoU .50:.95 unless named,
#: s/m/l = small (< 32^2 px), medium, large (> 96^2 px) objects; AR1/10/100 = at most 1/10/100
#: detections an image).
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster-coco-eval", "pycocotools")
PR_LABELS = ("IoU=0.50", "IoU=0.50:0.95")


def default_backend() -> str:
    """faster-coco-eval when installed (same numbers, faster), else pycocotools."""
    return BACKENDS[0] if importlib.util.find_spec("faster_coco_eval") is not None else BACKENDS[1]


def evaluate_coco(gt: str | os.PathLike | Mapping | Any, predictions: str | os.PathLike | Sequence[Mapping], *,
                  iou_type: str = "bbox", backend: str | None = None, validate: bool = True) -> dict[str, Any]:
    """Score COCO results against COCO ground truth; the numbers equal pycocotools'.

    Args:
        gt: ground truth, a path to a COCO JSON file, the loaded dict, or a pycocotools /
            faster-coco-eval `COCO` object (its `.dataset` is used). Not modified.
        predictions: COCO results, a path to a JSON file or a list of dicts
            `{"image_id", "category_id", "score", "bbox": [x, y, w, h] (pixels, top-left corner)}`;
            for `iou_type="segm"` each also has `"segmentation": {"size": [h, w], "counts": str}`
            (compressed RLE). Not modified.
        iou_type: "bbox" or "segm".
        backend: "faster-coco-eval" or "pycocotools"; None picks `default_backend()`.
        validate: check both inputs first (`validate.py`) and raise `VTError` on bad entries.

    Returns:
        `{"AP": float, ..., "ARl": float}` (the twelve `METRIC_NAMES`, fractions in [0, 1], -1
        where COCO leaves a number undefined, e.g. no small objects), `"per_class_AP"`:
        `{category name: AP@[.5:.95]}` (-1 for a category without ground truth; a name used by two
        categories gets " (id N)" appended), `"pr_curves"`: `{category name: {"IoU=0.50": (recall,
        precision), "IoU=0.50:0.95": (recall, precision)}}` with 101 recall points each (COCOeval's
        interpolated precision, all areas, 100 detections; categories without ground truth left
        out), and `"counts"`: `{"images", "gt", "crowd", "detections", "categories"}`.
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise VTError(f"unknown COCO backend {backend!r}" + did_you_mean(backend, BACKENDS))
    gt_dict = _load_gt(gt)
    results = _load_results(predictions)
    if validate:
        validate_gt(gt_dict, iou_type=iou_type, source=_name(gt, "ground truth"))
        validate_results(results, gt_dict, iou_type=iou_type, source=_name(predictions, "results"))
    if any(a.get("id") == 0 for a in gt_dict["annotations"]):
        from .. import report

        report.warn("a ground-truth annotation has id 0: pycocotools and faster-coco-eval take a match with "
                    "it for no match, which lowers AP; renumber annotation ids from 1")
    run = _run_faster if backend == "faster-coco-eval" else _run_pycocotools
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found annotation id 0")
        stats, precision, rec_thrs, cat_ids = run(gt_dict, results, iou_type)
    out: dict[str, Any] = {k: float(v) for k, v in zip(METRIC_NAMES, stats[:12])}
    names = _category_names(gt_dict["categories"], cat_ids)
    out["per_class_AP"], out["pr_curves"] = _per_class(precision, rec_thrs, names)
    crowd = sum(1 for a in gt_dict["annotations"] if a.get("iscrowd", 0))
    out["counts"] = {"images": len(gt_dict["images"]), "gt": len(gt_dict["annotations"]) - crowd, "crowd": crowd,
                     "detections": len(results), "categories": len(cat_ids)}
    return out


def _name(src: Any, default: str) -> str:
    return os.fspath(src) if isinstance(src, (str, os.PathLike)) else default


def _load_gt(gt: Any) -> dict:
    """A private copy of the ground truth: both libraries write into annotation dicts."""
    if isinstance(gt, (str, os.PathLike)):
        data = load_json(gt, what="ground truth")
        return data if not isinstance(data, dict) else dict(data)
    if hasattr(gt, "dataset") and isinstance(gt.dataset, Mapping):  # a pycocotools / faster-coco-eval COCO
        gt = gt.dataset
    if isinstance(gt, Mapping):
        copy = dict(gt)
        if isinstance(copy.get("annotations"), list):
            copy["annotations"] = [dict(a) if isinstance(a, Mapping) else a for a in copy["annotations"]]
        return copy
    raise VTError("ground truth is not COCO ground truth: expected a JSON path, a dict with images, annotations "
                  f"and categories, or a COCO object; got a {type(gt).__name__}")


def _load_results(predictions: Any) -> Any:
    if isinstance(predictions, (str, os.PathLike)):
        return load_json(predictions, what="results file")
    if isinstance(predictions, Sequence) and not isinstance(predictions, (str, bytes)):
        return [dict(r) if isinstance(r, Mapping) else r for r in predictions]
    return predictions  # validate_results names what it is


def _run_pycocotools(gt: dict, results: list, iou_type: str) -> tuple:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    ev = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats, ev.eval["precision"], ev.params.recThrs, list(ev.params.catIds)


def _run_faster(gt: dict, results: list, iou_type: str) -> tuple:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type, print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats, ev.eval["precision"], ev.params.recThrs, list(ev.params.catIds)


def _category_names(categories: list, cat_ids: list) -> list[str]:
    by_id = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    names = [by_id[c] for c in cat_ids]
    dup = {n for n in names if names.count(n) > 1}
    return [f"{n} (id {c})" if n in dup else n for n, c in zip(names, cat_ids)]


def _per_class(precision: Any, rec_thrs: Any, names: list[str]) -> tuple[dict, dict]:
    """precision: COCOeval's [T=10 IoUs, R=101 recalls, K classes, A=4 areas, M=3 maxDets] array."""
    import numpy as np

    ap: dict[str, float] = {}
    curves: dict[str, dict] = {}
    recall = [float(r) for r in rec_thrs]
    for k, name in enumerate(names):
        p = np.asarray(precision[:, :, k, 0, -1], dtype=np.float64)  # all areas, 100 detections
        valid = p > -1
        ap[name] = float(p[valid].mean()) if valid.any() else -1.0
        if valid.any():
            curves[name] = {PR_LABELS[0]: (recall, p[0].tolist()),
                            PR_LABELS[1]: (recall, np.where(valid, p, np.nan).mean(axis=0).tolist())}
    return ap, curves
