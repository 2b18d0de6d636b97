"""`vt convert --from coco|voc|yolo|masks --to coco|voc|yolo|masks IN OUT`: annotation formats
through one in-memory form, the checked `CocoData` of the existing readers.

Folder layouts (IN and OUT are folders; a COCO IN may also be the JSON file itself):
- coco:  `annotations.json` + `images/`            (COCO `file_name`s relative to `images/`)
- yolo:  `images/` + `labels/` (one NAME.txt per image, `cls cx cy w h` normalised) + `classes.txt`
- voc:   `JPEGImages/` + `Annotations/` (one NAME.xml per image, 1-based inclusive pixel boxes);
  an optional `classes.txt` fixes the class order (VOC files have none; we write one)
- masks: `images/` + `masks/` (PNG class indices, 0 = background, 255 = ignore) + `classes.txt`
  (background first)
Images are hard-linked into OUT (copied where links fail). Boxes are written with 10
significant digits: COCO -> YOLO -> COCO returns every box to within 1e-6 of the image size.
Masks -> COCO traces each connected region of a class with OpenCV (outer contours, so holes are
filled) and writes polygons; rasterising them back (pycocotools) differs from the source only at
staircase corners of the outline — `mask_iou` measures it (tests/test_convert.py).
"""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import VTError
from ..files import write_json, write_text
from .coco import CocoData, read_coco, read_coco_dict

FORMATS = ("coco", "voc", "yolo", "masks")
LAYOUT = {"coco": ("images", "annotations.json"), "yolo": ("images", "labels"), "voc": ("JPEGImages", "Annotations"),
          "masks": ("images", "masks")}


def read_any(fmt: str, src: str | os.PathLike) -> CocoData:
    """The annotations of folder `src` (layout above) as `CocoData` (with segmentations for masks/coco)."""
    src = Path(src)
    if fmt == "coco" and src.is_file():
        return read_coco(src, src.parent / "images" if (src.parent / "images").is_dir() else src.parent)
    images, ann = (src / part for part in LAYOUT[_check(fmt)])
    if not images.is_dir():
        raise VTError(f"{src}: no {images.name}/ folder ({fmt} layout: {' + '.join(LAYOUT[fmt])})")
    if fmt == "coco":
        return read_coco(ann, images)
    if fmt == "yolo":
        from .yolo import read_yolo

        return read_yolo(images, ann)
    if fmt == "voc":
        from .voc import read_voc

        names = src / "classes.txt"   # VOC files do not order classes: ours keep the order beside them
        return read_voc(images, ann, classes=_class_names(src, min_count=1) if names.is_file() else None)
    return _read_masks(images, ann, _class_names(src))


def write_any(fmt: str, data: CocoData, dst: str | os.PathLike) -> Path:
    """Write `data` in format `fmt` below folder `dst` (images linked); returns `dst`."""
    dst = Path(dst)
    images = dst / LAYOUT[_check(fmt)][0]
    for im in data.images:
        _link(im.path, images / im.file_name)
    if fmt == "coco":
        write_json(dst / "annotations.json", data.to_coco_dict(segmentation=True))
    elif fmt == "yolo":
        _write_yolo(data, dst / "labels")
        write_text(dst / "classes.txt", "".join(f"{c}\n" for c in data.classes))
    elif fmt == "voc":
        _write_voc(data, dst / "Annotations")
        write_text(dst / "classes.txt", "".join(f"{c}\n" for c in data.classes))
    else:
        _write_masks(data, dst / "masks")
        write_text(dst / "classes.txt", "".join(f"{c}\n" for c in ["background", *data.classes]))
    return dst


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, src_format: str, dst_format: str) -> CocoData:
    if Path(dst).resolve() == Path(src).resolve():
        raise VTError("vt convert: OUT must differ from IN (the images are linked into OUT)")
    data = read_any(src_format, src)
    if dst_format == "masks" and not any(a.segmentation for anns in data.annotations.values() for a in anns):
        raise VTError(f"{src}: the {src_format} annotations hold boxes only; masks need polygons or RLE (COCO)")
    write_any(dst_format, data, dst)
    return data


def _check(fmt: str) -> str:
    if fmt not in FORMATS:
        raise VTError(f"unknown annotation format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _g(v: float) -> str:
    return f"{v:.10g}"


def _write_yolo(data: CocoData, labels: Path) -> None:
    for im in data.images:
        lines = []
        for a in data.annotations[im.id]:
            if a.iscrowd:
                continue
            x, y, w, h = a.bbox
            lines.append(f"{a.label} {_g((x + w / 2) / im.width)} {_g((y + h / 2) / im.height)} "
                         f"{_g(w / im.width)} {_g(h / im.height)}\n")
        write_text(labels / Path(im.file_name).with_suffix(".txt"), "".join(lines))


def _write_voc(data: CocoData, annotations: Path) -> None:
    for im in data.images:
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = Path(im.file_name).name
        size = ET.SubElement(root, "size")
        for tag, v in (("width", im.width), ("height", im.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
        for a in data.annotations[im.id]:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = data.classes[a.label]
            ET.SubElement(obj, "difficult").text = str(int(a.iscrowd))
            box = ET.SubElement(obj, "bndbox")
            x1, y1, x2, y2 = a.xyxy   # pixel edges -> VOC's 1-based inclusive coordinates
            for tag, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(box, tag).text = _g(v)
        ET.indent(root)
        write_text(annotations / Path(im.file_name).with_suffix(".xml"), ET.tostring(root, encoding="unicode") + "\n")


def _write_masks(data: CocoData, masks: Path) -> None:
    from PIL import Image

    from ..files import atomic_path
    from .masks import coco_semantic_mask

    for im in data.images:
        mask, _ = coco_semantic_mask(data.annotations[im.id], height=im.height, width=im.width)
        with atomic_path(masks / Path(im.file_name).with_suffix(".png")) as tmp:
            Image.fromarray(mask.astype(np.uint8)).save(tmp, format="PNG")


def _class_names(src: Path, *, min_count: int = 2) -> list[str]:
    f = src / "classes.txt"
    if not f.is_file():
        raise VTError(f"{src}: masks need classes.txt (one class name a line, background first)")
    names = [x.strip() for x in f.read_text().splitlines() if x.strip()]
    if len(names) < min_count:
        raise VTError(f"{f}: need background and at least one class")
    return names


POLYGON_UPSAMPLE = 4


def mask_polygons(region: np.ndarray) -> list[list[float]]:
    """Outer contours of a boolean mask as COCO polygons `[x1, y1, x2, y2, ...]` in pixel-edge
    coordinates (pixel (r, c) covers [c, c + 1] x [r, r + 1]).

    OpenCV traces the centres of boundary pixels, half a pixel inside the region's true edge:
    rasterised back, a small object would lose its rim. Tracing the mask upsampled 4x puts the
    outline 1/8 pixel inside the edge instead, so every boundary pixel's centre stays inside."""
    import cv2

    k = POLYGON_UPSAMPLE
    up = np.kron(region.astype(np.uint8), np.ones((k, k), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / k
        if len(pts) < 3:
            continue
        polys.append([round(float(v), 4) for v in pts.reshape(-1)])
    return polys


def _read_masks(images: Path, masks: Path, classes: list[str]) -> CocoData:
    import cv2

    from .masks import pair_masks, read_mask

    pairs, _ = pair_masks(images, masks)
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in
                                                                   enumerate(classes) if i > 0]}
    for image_id, (img, mpath) in enumerate(pairs, start=1):
        mask = read_mask(mpath, num_classes=len(classes))
        coco["images"].append({"id": image_id, "file_name": img.relative_to(images).as_posix()})
        for c in range(1, len(classes)):
            n, comp = cv2.connectedComponents((mask == c).astype(np.uint8), connectivity=8)
            for k in range(1, n):
                region = comp == k
                ys, xs = np.nonzero(region)
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": c, "iscrowd": 0,
                    "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                             float(ys.max() - ys.min() + 1)],
                    "area": float(region.sum()), "segmentation": mask_polygons(region)})
    return read_coco_dict(coco, images, source=str(masks))


def mask_iou(a: np.ndarray, b: np.ndarray, *, num_classes: int) -> float:
    """Mean IoU over the foreground classes present in either mask (a round trip's fidelity)."""
    ious = []
    for c in range(1, num_classes):
        inter, union = np.sum((a == c) & (b == c)), np.sum((a == c) | (b == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)) if ious else 1.0


def convert_command(args) -> int:
    from ..engine.logging import console

    data = convert(args.input, args.output, src_format=args.src, dst_format=args.dst)
    n = sum(len(v) for v in data.annotations.values())
    console.print(f"converted {len(data.images)} images, {n} objects, {len(data.classes)} classes: "
                  f"{args.src} {args.input} -> {args.dst} {args.output}")
    if data.info:
        console.print(f"[dim]reader notes: {json.dumps(dict(data.info))}[/dim]")
    return 0
