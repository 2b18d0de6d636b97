"""`vt doctor TASK [key=value ...]`: a dataset report before training.

Reads the data exactly as `vt train` would (the task's `build_datasets` over the same config keys),
then reports counts per class and split (imbalance, suggested class weights), images training will
skip or that are odd (mode, size outliers, EXIF rotation), duplicates and near-duplicates by
perceptual hash, train/val leakage; for detection box sizes and aspects against the anchors the
model will build, dropped and clipped boxes, images without boxes; for segmentation the mask values
against the class list and the pixel share per class.

    OUT/doctor.json   {"task", "ok", "findings": [...], "splits": {...}, "stats": {...}}
    OUT/doctor.html   the findings and histograms (inline PNG)

Exit status 1 when a finding is an error (something training would hit), else 0.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .. import report
from ..errors import VTError
from . import checks


def doctor_command(args: argparse.Namespace) -> int:
    from ..config import load_config

    cfg = load_config(args.task, path=args.config, overrides=args.overrides)
    out = Path(args.out or cfg.run.out_dir or f"doctor-{args.task}")
    result = run_doctor(cfg, out=out)
    return 0 if result["ok"] else 1


def run_doctor(cfg: Any, *, out: str | Path) -> dict:
    """Check the dataset `cfg.data` describes; writes OUT/doctor.json and OUT/doctor.html."""
    from ..task import get_task
    from .page import print_findings, write_html

    report.reset()
    from ..defaults import resolve_defaults

    task = get_task(cfg.task).configured(cfg)
    cfg = resolve_defaults(cfg, task)   # the image size, head and augmentation vt train would use
    image_size = cfg.train.image_size
    result: dict[str, Any] = {"task": cfg.task, "findings": [], "splits": {}, "stats": {}}
    try:
        splits = task.build_datasets(data=cfg.data, image_size=image_size, preprocessing=_preprocessing(),
                                     seed=cfg.train.seed, augment=False)
    except VTError as e:   # training would stop here: the one error there is
        result["findings"].append(checks.finding("error", "unreadable_dataset", str(e)))
        splits = None
    if splits is not None:
        gather = {"classification": _classification, "detection": _detection, "segmentation": _segmentation}
        per_split = gather.get(cfg.task, _classification)(splits, cfg, task, image_size, result)
        facts = {s: [checks.image_facts(Path(p)) for p in paths] for s, paths in per_split.items()}
        for s, fs in facts.items():
            result["splits"][s] = {**result["splits"].get(s, {}), "images": len(fs)}
        every = [f for fs in facts.values() for f in fs]
        result["findings"] += checks.unreadable(every, report.skipped())
        result["findings"] += checks.odd_images(every)
        result["findings"] += checks.duplicates(facts)
        result["stats"]["image_sizes"] = [[f["width"], f["height"]] for f in every if "error" not in f]
    result["findings"].sort(key=lambda f: (f["severity"] != "error", f["kind"]))
    result["ok"] = not any(f["severity"] == "error" for f in result["findings"])
    out = Path(out)
    from ..files import write_json

    write_json(out / "doctor.json", result)
    write_html(out / "doctor.html", result)
    print_findings(result, out)
    return result


def _preprocessing():
    from ..backbones.base import Preprocessing

    return Preprocessing()


def _classification(splits, cfg, task, image_size, result) -> dict[str, list]:
    out = {}
    multilabel = bool(cfg.data.multilabel)
    for name, ds in (("train", splits.train), ("val", splits.val)):
        if ds is None:
            continue
        # multi-label: images holding each class (an image counts for every label it has)
        labels = [int(i) for t in ds.targets for i in np.flatnonzero(t["label"])] if multilabel \
            else [t["label"] for t in ds.targets]
        result["splits"][name] = {"per_class": checks.class_counts(labels, splits.classes)}
        out[name] = list(ds.paths)
    if multilabel:   # the imbalance keys (class weights, focal, balanced sampler) are single-label
        result["stats"]["suggested_class_weights"] = None
        return out
    found, weights = checks.balance(result["splits"]["train"]["per_class"], "images")
    result["findings"] += found
    result["stats"]["suggested_class_weights"] = weights
    return out


def _detection(splits, cfg, task, image_size, result) -> dict[str, list]:
    out, sizes, aspects, negatives = {}, [], [], []
    for name, ds in (("train", splits.train), ("val", splits.val)):
        if ds is None:
            continue
        coco = ds.coco
        labels = []
        for im in coco.images:
            boxes, lab = coco.boxes(im.id)
            labels += lab.tolist()
            if not len(boxes):
                negatives.append(im.path)
            scale = image_size / max(im.width, im.height)   # the detector sees images at train.image_size
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            sizes += (np.sqrt(w * h) * scale).tolist()
            aspects += (w / np.maximum(h, 1e-6)).tolist()
        result["splits"][name] = {"per_class": checks.class_counts(labels, splits.classes), "boxes": len(labels)}
        out[name] = [im.path for im in coco.images]
    found, weights = checks.balance(result["splits"]["train"]["per_class"], "boxes")
    result["findings"] += found
    result["findings"] += _box_findings(splits.info, negatives)
    anchors = _anchor_sizes(cfg, task, splits, image_size)
    result["stats"].update(box_sizes=sizes, box_aspects=aspects, anchor_sizes=anchors,
                           suggested_class_weights=weights)
    if anchors and sizes:
        small = [s for s in sizes if s < min(anchors) / 2]
        large = [s for s in sizes if s > max(anchors) * 2]
        if small or large:
            result["findings"].append(checks.finding(
                "warning", "anchor_mismatch", f"{len(small)} box(es) under half the smallest anchor ({min(anchors)} px) "
                f"and {len(large)} over twice the largest ({max(anchors)} px) at train.image_size={image_size}: "
                "change train.image_size or model.anchor_sizes", []))
    return out


def _box_findings(info: dict, negatives: list) -> list[dict]:
    out = []
    for key, n in sorted(info.items()):
        kind = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
        if kind in ("degenerate_boxes", "boxes_outside_image"):
            out.append(checks.finding("error", kind, f"{n} box(es) dropped in {key.split('_')[0]}: {kind.replace('_', ' ')}"))
        elif kind in ("clipped_boxes", "renumbered_annotation_ids", "size_mismatch", "labels_without_image",
                      "images_without_mask", "masks_without_image", "annotations_without_segmentation"):
            out.append(checks.finding("warning", kind, f"{n} in {key.split('_')[0]}: {kind.replace('_', ' ')}"))
    if negatives:
        out.append(checks.finding("warning", "no_boxes", f"{len(negatives)} image(s) without boxes (trained as "
                                  "negatives)", negatives))
    return out


def _anchor_sizes(cfg, task, splits, image_size) -> list[int]:
    """The anchor sizes of the detector `vt train` would build (random weights: only the shape matters)."""
    try:
        from ..backbones import create_backbone

        bb = create_backbone(cfg.model.backbone, weights=None, out_indices=cfg.model.out_indices)
        options = {k: getattr(cfg.model, k) for k in task.model_options}
        head = task.resolve_head(cfg.model.head)
        model = task.build_model(backbone=bb, num_classes=len(splits.classes), head=head, image_size=image_size, **options)
        gen = model.detector.rpn.anchor_generator if hasattr(model.detector, "rpn") else model.detector.anchor_generator
        return sorted({int(s) for level in gen.sizes for s in level})
    except Exception:  # noqa: BLE001 - a head without anchors (FCOS-like): no comparison
        return []


def _segmentation(splits, cfg, task, image_size, result) -> dict[str, list]:
    out, k = {}, len(splits.classes)
    for name, ds in (("train", splits.train), ("val", splits.val)):
        if ds is None:
            continue
        pixels = np.zeros(k + 1, np.int64)   # the last bin: ignore (255)
        for path, source in ds.items:
            mask = ds.mask_of(source, None)
            v = np.where(mask == 255, k, mask)
            pixels += np.bincount(v.ravel(), minlength=k + 1)[: k + 1]
        share = pixels / max(int(pixels.sum()), 1)
        result["splits"][name] = {"per_class": {c: int(pixels[i]) for i, c in enumerate(splits.classes)},
                                  "pixel_share": {c: round(float(share[i]), 4) for i, c in enumerate(splits.classes)},
                                  "ignore_share": round(float(share[k]), 4)}
        out[name] = [p for p, _ in ds.items]
    tr = result["splits"]["train"]
    found, weights = checks.balance(tr["per_class"], "pixels")
    result["findings"] += [f for f in found if f["kind"] == "empty_class"] + _box_findings(splits.info, [])
    result["stats"]["suggested_class_weights"] = weights
    if tr["ignore_share"] > 0.5:
        result["findings"].append(checks.finding("warning", "mostly_ignore", f"{tr['ignore_share']:.0%} of train pixels "
                                  "are 255 (ignore): if 255 marks objects, save them as class indices"))
    return out
