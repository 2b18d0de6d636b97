"""COCO JSON (detection and instance annotations) -> images, categories and per-image annotations.

One reader for every task that consumes COCO files. COCO category ids may be anything (1, 3, 90,
...): the reader maps them to contiguous labels `0..K-1` (sorted by id, or in the order of a
given class list) and keeps the mapping both ways, so every output can go back to the file's ids.

    data = read_coco("instances_train.json", "images/train")
    data.classes                 # ["cat", "dog"]
    data.cat_to_label[18]        # 1
    data.label_to_cat[1]         # 18
    for im in data.images:       # CocoImage(id, file_name, path, width, height)
        anns = data.annotations[im.id]          # list[CocoAnnotation]
        boxes, labels = data.boxes(im.id)       # (N, 4) float32 xyxy pixels, (N,) int64 labels
    gt = data.to_coco_dict()     # ground truth for evaluation, with the file's own ids

Bad input is either a one-line `VTError` (the file is inconsistent: unknown category id, an
annotation for an image id that is not listed, a malformed bbox, a path escaping the root) or a
counted drop in `data.info` (the data is imperfect but usable: image file missing or unreadable,
box of zero or negative size, box entirely outside its image). Boxes partly outside are clipped.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VTError, did_you_mean
from .. import report
from .image import probe_image, safe_join


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    path: Path
    width: int     # as decoded (EXIF orientation applied)
    height: int


@dataclass(frozen=True)
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int                 # the file's id
    label: int                       # contiguous 0..K-1
    bbox: tuple[float, float, float, float]   # x, y, w, h in pixels, clipped to the image
    area: float
    iscrowd: bool
    segmentation: Any = None         # polygons [[x1, y1, ...], ...], an RLE dict, or None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return x, y, x + w, y + h


@dataclass
class CocoData:
    """A COCO file, checked: `images` sorted by id (only those whose files exist and decode),
    `annotations[image_id]` for every kept image (possibly empty: a negative image)."""

    images: list[CocoImage]
    categories: list[dict]            # [{"id", "name", ...}] in label order
    annotations: dict[int, list[CocoAnnotation]]
    info: dict[str, int] = field(default_factory=dict)   # counted drops and fixes

    @property
    def classes(self) -> list[str]:
        return [str(c["name"]) for c in self.categories]

    @property
    def cat_to_label(self) -> dict[int, int]:
        return {int(c["id"]): i for i, c in enumerate(self.categories)}

    @property
    def label_to_cat(self) -> list[int]:
        return [int(c["id"]) for c in self.categories]

    def image(self, image_id: int) -> CocoImage:
        for im in self.images:
            if im.id == image_id:
                return im
        raise KeyError(image_id)

    def boxes(self, image_id: int, *, include_crowd: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`(boxes (N, 4) float32 xyxy pixels, labels (N,) int64)` of one image; crowd regions
        are left out unless asked for (detectors ignore them in training)."""
        anns = [a for a in self.annotations[image_id] if include_crowd or not a.iscrowd]
        boxes = np.array([a.xyxy for a in anns], dtype=np.float32).reshape(-1, 4)
        return boxes, np.array([a.label for a in anns], dtype=np.int64)

    def subset(self, image_ids: Iterable[int]) -> CocoData:
        keep = set(image_ids)
        return CocoData(images=[im for im in self.images if im.id in keep], categories=list(self.categories),
                        annotations={k: v for k, v in self.annotations.items() if k in keep}, info=dict(self.info))

    def to_coco_dict(self, *, segmentation: bool = False) -> dict:
        """COCO ground truth of the kept images and annotations, with the file's own ids."""
        anns = []
        for im in self.images:
            for a in self.annotations[im.id]:
                d = {"id": a.id, "image_id": a.image_id, "category_id": a.category_id, "bbox": list(a.bbox),
                     "area": a.area, "iscrowd": int(a.iscrowd)}
                if segmentation and a.segmentation is not None:
                    d["segmentation"] = a.segmentation
                anns.append(d)
        return {"images": [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
                           for im in self.images],
                "annotations": anns, "categories": [dict(c) for c in self.categories]}


def read_coco(annotations: str | os.PathLike, images_root: str | os.PathLike, *,
              classes: Sequence[str] | None = None, check_images: bool = True) -> CocoData:
    """Read and check a COCO JSON file whose `file_name`s are relative to `images_root`.

    `classes`: the category names in the label order wanted (must name every category of the
    file); default: categories sorted by id. `check_images`: open every image header (missing
    or undecodable files are dropped and counted; sizes come from the file, EXIF applied)."""
    from ..evaluation.validate import load_json

    raw = load_json(annotations, what="COCO annotations")
    return read_coco_dict(raw, images_root, classes=classes, check_images=check_images,
                          source=os.fspath(annotations))


def read_coco_dict(raw: Any, images_root: str | os.PathLike, *, classes: Sequence[str] | None = None,
                   check_images: bool = True, source: str = "COCO data") -> CocoData:
    """`read_coco` of an already loaded COCO dict (VOC and YOLO readers build one)."""
    src = source
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) \
            or not isinstance(raw.get("categories"), list):
        raise VTError(f"{src} is not COCO JSON: it needs 'images' and 'categories' lists (and 'annotations')")
    info: Counter = Counter()
    categories = _categories(raw["categories"], classes, src)
    images = _images(raw["images"], Path(images_root), src, info, check_images)
    per_image = _annotations(raw.get("annotations") or [], images, categories, src, info)
    kept = sorted((im for im in images.values() if im is not None), key=lambda im: im.id)
    return CocoData(images=kept, categories=categories,
                    annotations={im.id: per_image.get(im.id, []) for im in kept}, info=dict(info))


def _categories(cats: list, classes: Sequence[str] | None, src: str) -> list[dict]:
    seen: dict[int, dict] = {}
    for c in cats:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise VTError(f"{src}: a category needs an integer 'id' and a string 'name', got {str(c)[:80]}")
        if c["id"] in seen:
            raise VTError(f"{src}: category id {c['id']} is listed twice")
        seen[c["id"]] = dict(c)
    if not seen:
        raise VTError(f"{src} has no categories")
    ordered = [seen[k] for k in sorted(seen)]
    if classes is None:
        return ordered
    names = [c["name"] for c in ordered]
    if sorted(classes) != sorted(names) or len(set(names)) != len(names):
        extra = [n for n in classes if n not in names]
        bad = f"{extra[0]!r} is not a category{did_you_mean(extra[0], names)}" if extra else \
            f"the file's categories are {names}"
        raise VTError(f"data.classes {list(classes)} must name each category of {src} once: {bad}")
    by_name = {c["name"]: c for c in ordered}
    return [by_name[n] for n in classes]


def _images(items: list, root: Path, src: str, info: Counter, check: bool) -> dict[int, CocoImage | None]:
    """id -> CocoImage, or None for an image dropped (file missing or unreadable)."""
    out: dict[int, CocoImage | None] = {}
    for im in items:
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            raise VTError(f"{src}: an image needs an integer 'id' and a 'file_name', got {str(im)[:80]}")
        if im["id"] in out:
            raise VTError(f"{src}: image id {im['id']} is listed twice")
        path = safe_join(root, im["file_name"], source=f"{src} image id {im['id']}")
        size = (im.get("width"), im.get("height"))
        if check or not all(isinstance(v, int) for v in size):
            if not path.is_file():
                info["missing_images"] += 1
                report.skip(path, "missing", f"{src}: image id {im['id']} file_name {im['file_name']!r}")
                out[im["id"]] = None
                continue
            try:
                size = probe_image(path) if check else image_size(path)
            except Exception as e:  # noqa: BLE001 - any decoder failure: the file is bad, count and skip it
                info["unreadable_images"] += 1
                report.skip(path, getattr(e, "reason", "unreadable"), str(e))
                out[im["id"]] = None
                continue
            if isinstance(im.get("width"), int) and (im.get("width"), im.get("height")) != size:
                info["size_mismatch"] += 1
        out[im["id"]] = CocoImage(id=im["id"], file_name=im["file_name"], path=path, width=int(size[0]),
                                  height=int(size[1]))
    return out


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """`(width, height)` of an image as `read_image` decodes it (EXIF rotation applied), from its header."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _annotations(items: list, images: dict[int, CocoImage | None], categories: list[dict], src: str,
                 info: Counter) -> dict[int, list[CocoAnnotation]]:
    cat_to_label = {c["id"]: i for i, c in enumerate(categories)}
    ids = [a.get("id") if isinstance(a, dict) else None for a in items]
    renumber = not all(isinstance(i, int) and i > 0 for i in ids) or len(set(ids)) != len(ids)
    if renumber and items:
        info["renumbered_annotation_ids"] = len(items)
    out: dict[int, list[CocoAnnotation]] = {}
    for n, a in enumerate(items):
        if not isinstance(a, dict):
            raise VTError(f"{src}: annotation {n} is not an object: {str(a)[:80]}")
        if a.get("image_id") not in images:
            raise VTError(f"{src}: annotation {a.get('id', n)} refers to image_id {a.get('image_id')!r}, "
                          "which is not in 'images'")
        if a.get("category_id") not in cat_to_label:
            raise VTError(f"{src}: annotation {a.get('id', n)} has category_id {a.get('category_id')!r}, which is "
                          f"not in 'categories' (ids {sorted(cat_to_label)})")
        im = images[a["image_id"]]
        if im is None:
            continue
        ann = _annotation(a, n + 1 if renumber else a["id"], im, cat_to_label[a["category_id"]], src, info)
        if ann is not None:
            out.setdefault(im.id, []).append(ann)
    return out


def _annotation(a: dict, ann_id: int, im: CocoImage, label: int, src: str, info: Counter) -> CocoAnnotation | None:
    bbox = a.get("bbox")
    if bbox is None and a.get("segmentation"):
        bbox = _bbox_from_segmentation(a["segmentation"], im)
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        raise VTError(f"{src}: annotation {a.get('id', ann_id)} has bbox {str(bbox)[:60]}; expected [x, y, w, h] "
                      "(4 finite numbers, pixels)")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        info["degenerate_boxes"] += 1
        return None
    x1, y1 = min(max(x, 0.0), im.width), min(max(y, 0.0), im.height)
    x2, y2 = min(max(x + w, 0.0), im.width), min(max(y + h, 0.0), im.height)
    if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
        info["boxes_outside_image"] += 1
        return None
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        info["clipped_boxes"] += 1
    area = a.get("area")
    area = float(area) if isinstance(area, (int, float)) and area > 0 else (x2 - x1) * (y2 - y1)
    return CocoAnnotation(id=int(ann_id), image_id=im.id, category_id=int(a["category_id"]), label=label,
                          bbox=(x1, y1, x2 - x1, y2 - y1), area=area, iscrowd=bool(a.get("iscrowd", 0)),
                          segmentation=a.get("segmentation"))


def _bbox_from_segmentation(seg: Any, im: CocoImage) -> list[float] | None:
    try:
        from pycocotools import mask as mask_utils

        rles = mask_utils.frPyObjects(seg, im.height, im.width)
        rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
        return [float(v) for v in mask_utils.toBbox(rle)]
    except Exception:  # noqa: BLE001 - malformed segmentation: reported as a missing bbox
        return None


def with_labels(data: CocoData, classes: Sequence[str]) -> CocoData:
    """`data` with its labels re-ordered to `classes` (names of its categories, each once)."""
    cats = _categories(data.categories, classes, "the COCO data")
    c2l = {c["id"]: i for i, c in enumerate(cats)}
    anns = {k: [replace(a, label=c2l[a.category_id]) for a in v] for k, v in data.annotations.items()}
    return CocoData(images=data.images, categories=cats, annotations=anns, info=dict(data.info))
