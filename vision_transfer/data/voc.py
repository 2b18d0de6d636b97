"""Pascal VOC XML folders -> `CocoData` (the one in-memory form of detection annotations).

Layout: an image folder and an annotation folder with one `NAME.xml` per image
(`<annotation><filename>NAME.jpg</filename><size><width/><height/></size><object><name>cat</name>
<difficult>0</difficult><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object>...`).
VOC coordinates are 1-based and inclusive: a box is converted to pixel edges as
`(xmin - 1, ymin - 1, xmax, ymax)`. `difficult` objects become crowd regions (ignored in
training, neither hit nor miss in evaluation, like VOC's own protocol). Images of the folder
without an XML file are kept as negatives. Image ids are 1..N in file order; category ids 1..K
in class order.

    data = read_voc("VOC/JPEGImages", "VOC/Annotations", classes=["cat", "dog"])
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ..errors import VTError, did_you_mean
from .coco import CocoData, read_coco_dict
from .image import list_images, safe_join


def read_voc(images: str | os.PathLike, annotations: str | os.PathLike, *,
             classes: Sequence[str] | None = None) -> CocoData:
    """Read every `*.xml` below `annotations`; `classes` fixes the label order (default: the
    object names found, sorted). An object whose name is not in `classes` is a `VTError`."""
    images, annotations = Path(images), Path(annotations)
    if not annotations.is_dir():
        raise VTError(f"VOC annotations folder {annotations} does not exist (one NAME.xml per image)")
    if not images.is_dir():
        raise VTError(f"VOC images folder {images} does not exist")
    parsed = [_parse(p, images) for p in sorted(annotations.rglob("*.xml"))]
    names = sorted({o[0] for _, objs in parsed for o in objs}) if classes is None else list(classes)
    if not names:
        raise VTError(f"no objects in {annotations} and no data.classes given: name the classes")
    annotated = {p.resolve() for p, _ in parsed}
    negatives = [(p, []) for p in list_images(images) if p.resolve() not in annotated]
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    cat = {n: i + 1 for i, n in enumerate(names)}
    for image_id, (path, objs) in enumerate(parsed + negatives, start=1):
        coco["images"].append({"id": image_id, "file_name": path.relative_to(images.resolve()).as_posix()
                               if path.is_absolute() else str(path)})
        for name, difficult, (x1, y1, x2, y2), src in objs:
            if name not in cat:
                raise VTError(f"{src}: object class {name!r} is not in data.classes{did_you_mean(name, names)}")
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": cat[name], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                        "iscrowd": int(difficult)})
    return read_coco_dict(coco, images, source=str(annotations))


def _parse(xml_path: Path, images: Path) -> tuple[Path, list]:
    """(image path, [(name, difficult, (x1, y1, x2, y2) pixel edges, source)])."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise VTError(f"{xml_path} is not valid XML ({e})") from None
    filename = (root.findtext("filename") or "").strip()
    path = safe_join(images, filename, source=str(xml_path)) if filename else None
    if path is None or not path.is_file():
        stems = [p for p in images.glob(xml_path.stem + ".*") if p.suffix.lower() != ".xml"]
        path = stems[0].resolve() if stems else (path or images.resolve() / (xml_path.stem + ".jpg"))
    objs = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise VTError(f"{xml_path}: object {k} ({name or 'no name'}) needs a <bndbox> with numeric "
                          "xmin, ymin, xmax, ymax") from None
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        objs.append((name, difficult, (xmin - 1.0, ymin - 1.0, xmax, ymax), f"{xml_path} object {k}"))
    return path, objs
