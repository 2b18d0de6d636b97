"""Detection evaluation (COCO numbers with the dataset's own ids) and prediction drawing.

`evaluate_detector` returns the twelve COCO numbers, `per_class_AP`, and two private entries:
`_predictions` (a COCO results list: `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`
with the file's image and category ids) and `_pr_curves`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vision_transfer.evaluation.coco import METRIC_NAMES, evaluate_coco
from vision_transfer.files import atomic_path


def coco_results(outputs: Sequence[dict], image_ids: Sequence[int], label_to_cat: Sequence[int]) -> list[dict]:
    """Detector outputs (xyxy pixels, labels from 0) -> COCO results with the file's ids."""
    rows = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu().numpy()
        labels = out["labels"].cpu().numpy()
        scores = out["scores"].detach().float().cpu().numpy()
        for (x1, y1, x2, y2), lab, s in zip(boxes, labels, scores):
            rows.append({"image_id": int(image_id), "category_id": int(label_to_cat[int(lab)]),
                         "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2),
                                  round(float(y2 - y1), 2)], "score": round(float(s), 5)})
    return rows


def evaluate_detector(model: nn.Module, loader: Any, *, device: torch.device, classes: list[str],
                      amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Run `model` (eval mode) over `loader` of a `DetectionDataset` and score it with COCOeval."""
    coco = getattr(loader.dataset, "coco", None)
    if coco is None:
        raise TypeError("detection evaluation needs a loader over a DetectionDataset (it carries the ground truth)")
    results: list[dict] = []
    for images, targets in loader:
        images = [im.to(device, non_blocking=True) for im in images]
        outputs = model(images)   # autocast: set by the engine's evaluate
        results += coco_results(outputs, [t["image_id"] for t in targets], coco.label_to_cat)
    return score(coco.to_coco_dict(), results, classes)


def score(gt: dict, results: list[dict], classes: list[str]) -> dict[str, Any]:
    """COCO metrics; with no detections at all every AP / AR is 0 (-1 where COCO leaves it undefined)."""
    if results:
        m = evaluate_coco(gt, results, iou_type="bbox")
        out = {k: m[k] for k in METRIC_NAMES}
        out["per_class_AP"] = m["per_class_AP"]
        out["_pr_curves"] = m["pr_curves"]
    else:
        with_gt = {a["category_id"] for a in gt["annotations"] if not a.get("iscrowd")}
        out = {k: 0.0 for k in METRIC_NAMES}
        out["per_class_AP"] = {c["name"]: (0.0 if c["id"] in with_gt else -1.0) for c in gt["categories"]}
        out["_pr_curves"] = {}
    out["_predictions"] = results
    return out


# ---- predict: drawings -----------------------------------------------------------------------

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]])


def draw_detections(image: np.ndarray, detections: list[dict], path: str | Path) -> None:
    """Write `image` (HxWx3 uint8) as PNG with each `{"box": xyxy, "label", "class_index", "score"}`
    drawn as a coloured rectangle and "label 0.93" above it."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    width = max(1, round(max(im.size) / 300))
    for d in detections:
        colour = tuple(int(c) for c in PALETTE[d["class_index"] % len(PALETTE)])
        x1, y1, x2, y2 = d["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{d['label']} {d['score']:.2f}"
        tx, ty = x1, max(0, y1 - 11)
        l, t, r, b = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([l - 1, t - 1, r + 1, b + 1], fill=colour)
        draw.text((tx, ty), text, fill=(0, 0, 0) if sum(colour) > 400 else (255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        im.save(tmp)
