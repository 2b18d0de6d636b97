"""YOLO txt folders -> `CocoData` (the one in-memory form of detection annotations).

Layout: an image folder and a label folder with one `NAME.txt` per image (same stem, same
relative sub-folder), one object a line: `class_index cx cy w h`, all four normalised to [0, 1]
by the image's width and height. Class names come from `data.classes`, else from a classes file
next to the labels (`classes.txt`, one name a line, or `data.yaml` / `dataset.yaml` with
`names:`). An image without a label file, or with an empty one, is a negative. Image ids are
1..N in file order; category ids are class index + 1.

    data = read_yolo("ds/images/train", "ds/labels/train")
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..errors import VTError
from .coco import CocoData, image_size, read_coco_dict
from .image import list_images

CLASS_FILES = ("classes.txt", "data.yaml", "dataset.yaml", "classes.names", "obj.names")


def read_yolo(images: str | os.PathLike, labels: str | os.PathLike, *,
              classes: Sequence[str] | None = None) -> CocoData:
    """Read the labels of every image below `images`; a class index out of range or a
    malformed line is a one-line `VTError` naming the file and line."""
    images, labels = Path(images), Path(labels)
    if not images.is_dir():
        raise VTError(f"YOLO images folder {images} does not exist")
    if not labels.is_dir():
        raise VTError(f"YOLO labels folder {labels} does not exist (one NAME.txt per image)")
    names = list(classes) if classes is not None else find_class_names(labels)
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    paths = list_images(images)
    orphans = {p.relative_to(labels).with_suffix("") for p in labels.rglob("*.txt") if p.name not in CLASS_FILES}
    for image_id, path in enumerate(paths, start=1):
        rel = path.relative_to(images)
        orphans.discard(rel.with_suffix(""))
        coco["images"].append({"id": image_id, "file_name": rel.as_posix()})
        label_file = labels / rel.with_suffix(".txt")
        if not label_file.is_file():
            continue
        try:
            width, height = image_size(path)
        except Exception:  # noqa: BLE001 - read_coco_dict counts the unreadable image
            continue
        for cls, cx, cy, w, h in _lines(label_file, len(names)):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": cls + 1, "iscrowd": 0,
                                        "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]})
    data = read_coco_dict(coco, images, source=str(labels))
    if orphans:
        data.info["labels_without_image"] = len(orphans)
    return data


def _lines(path: Path, num_classes: int) -> list[tuple[int, float, float, float, float]]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except ValueError:
            raise VTError(f"{path}:{n}: expected 'class_index cx cy w h' (normalised box), got {line.strip()[:60]!r}; "
                          "polygon (segmentation) labels are not detection labels") from None
        if not all(-1e-3 <= v <= 1 + 1e-3 for v in (cx, cy, w, h)):
            raise VTError(f"{path}:{n}: box values must be normalised to [0, 1] by the image size, got "
                          f"{line.strip()[:60]!r}; pixel coordinates? divide x by the width and y by the height")
        if not 0 <= cls < num_classes:
            raise VTError(f"{path}:{n}: class index {cls} is out of range: {num_classes} classes (0..{num_classes - 1})")
        out.append((cls, cx, cy, w, h))
    return out


def find_class_names(labels: Path) -> list[str]:
    """Class names from a classes file in `labels` or its parents (up to two levels)."""
    for folder in (labels, labels.parent, labels.parent.parent):
        for name in CLASS_FILES:
            f = folder / name
            if not f.is_file():
                continue
            if f.suffix == ".yaml":
                names = (yaml.safe_load(f.read_text()) or {}).get("names")
                if isinstance(names, dict):
                    names = [names[k] for k in sorted(names)]
                if isinstance(names, list) and names:
                    return [str(n) for n in names]
            else:
                names = [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]
                if names:
                    return names
    raise VTError(f"no class names for the YOLO labels in {labels}: give data.classes=[...] or put classes.txt "
                  "(one name a line) next to the labels")
