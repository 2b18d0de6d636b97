"""Write generated shape scenes (exact boxes) to disk as COCO, VOC and YOLO, for tests and demos;
the same scenes' semantic masks (`masks`) and an image-level label (`labels`) too, so that one
image carries boxes, masks and a label (multi-task tests).

    paths = write_scenes("data/", n=12, size=96, formats=("coco", "voc", "yolo", "masks", "labels"))
    paths["coco"]    # {"images": "data/images", "annotations": "data/coco.json"}
    paths["masks"]   # {"images": ..., "masks": "data/masks", "classes": [background, square, disc, triangle]}
    paths["labels"]  # {"images": ..., "annotations": "data/labels.csv"}: path,label = the largest shape's class

COCO category ids are deliberately non-contiguous (`CATEGORY_IDS`) so that the id mapping is
exercised; image ids start at 1 in file order in every format.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vision_transfer.data.synthetic import SHAPE_CLASSES, make_scene

CATEGORY_IDS = (3, 10, 42)   # square, disc, triangle


def write_scenes(root: str | Path, *, n: int, size: int = 96, seed: int = 0, max_objects: int = 3,
                 formats: Sequence[str] = ("coco",), min_radius: int = 6, max_radius: int | None = None,
                 negatives: int = 0) -> dict[str, dict[str, str]]:
    """`n` scenes (plus `negatives` empty images) under `root/images`; returns per format the
    `images` and `annotations` paths a data config needs. Boxes are exact pixel edges (xyxy)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(n + negatives):
        s = make_scene(seed=seed * 100_003 + i, size=size, max_objects=max_objects, min_radius=min_radius,
                       max_radius=max_radius)
        if i >= n:   # a negative: background texture only
            s = {**s, "image": np.full_like(s["image"], 110), "boxes": s["boxes"][:0], "labels": s["labels"][:0]}
        name = f"scene_{i:03d}.png"
        Image.fromarray(s["image"]).save(root / "images" / name)
        scenes.append((name, s))
    out = {}
    if "coco" in formats:
        out["coco"] = {"images": str(root / "images"), "annotations": str(_coco(root, scenes, size))}
    if "voc" in formats:
        out["voc"] = {"images": str(root / "images"), "annotations": str(_voc(root, scenes, size))}
    if "yolo" in formats:
        out["yolo"] = {"images": str(root / "images"), "annotations": str(_yolo(root, scenes, size))}
    if "masks" in formats:
        (root / "masks").mkdir(exist_ok=True)
        for name, s in scenes:
            Image.fromarray(s["mask"].astype(np.uint8)).save(root / "masks" / name)
        out["masks"] = {"images": str(root / "images"), "masks": str(root / "masks"),
                        "classes": ["background", *SHAPE_CLASSES]}
    if "labels" in formats:
        rows = ["path,label"] + [f"{name},{largest_shape(s)}" for name, s in scenes]
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
        out["labels"] = {"images": str(root / "images"), "annotations": str(root / "labels.csv")}
    return out


def largest_shape(scene: dict) -> str:
    """The image-level label of a scene: the class of its largest shape ("none" when empty)."""
    if not len(scene["labels"]):
        return "none"
    areas = scene["instance_masks"].reshape(len(scene["labels"]), -1).sum(1)
    return SHAPE_CLASSES[int(scene["labels"][int(areas.argmax())])]


def _coco(root: Path, scenes: list, size: int) -> Path:
    images, anns = [], []
    for image_id, (name, s) in enumerate(scenes, start=1):
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for (x1, y1, x2, y2), lab in zip(s["boxes"].tolist(), s["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[lab],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, SHAPE_CLASSES)]
    path = root / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _voc(root: Path, scenes: list, size: int) -> Path:
    folder = root / "voc"
    folder.mkdir(exist_ok=True)
    for name, s in scenes:
        objs = "".join(
            f"<object><name>{SHAPE_CLASSES[lab]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1:g}</xmin>"
            f"<ymin>{y1 + 1:g}</ymin><xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>"
            for (x1, y1, x2, y2), lab in zip(s["boxes"].tolist(), s["labels"].tolist()))
        (folder / (Path(name).stem + ".xml")).write_text(
            f"<annotation><filename>{name}</filename><size><width>{size}</width><height>{size}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
    return folder


def _yolo(root: Path, scenes: list, size: int) -> Path:
    folder = root / "labels"
    folder.mkdir(exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n")
    for name, s in scenes:
        lines = [f"{lab} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} {(x2 - x1) / size:.6f} "
                 f"{(y2 - y1) / size:.6f}" for (x1, y1, x2, y2), lab in zip(s["boxes"].tolist(), s["labels"].tolist())]
        (folder / (Path(name).stem + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    return folder
