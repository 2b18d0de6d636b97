"""Readers for labelled image lists: image folders (one folder per class) and CSV files.

Both return `LabelledImages(paths, labels, classes)`; `read_multilabel_csv` (several labels per
image) returns `MultiLabelImages(paths, labels: a list of class indices per image, classes)`.
Paths from a CSV are resolved inside its root and may not escape it.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VTError, did_you_mean
from .image import IMAGE_SUFFIXES, list_images, safe_join


@dataclass
class LabelledImages:
    paths: list[Path]
    labels: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> LabelledImages:
        return LabelledImages([self.paths[i] for i in idx], [self.labels[i] for i in idx], self.classes)


def read_image_folder(root: str | os.PathLike, *, classes: list[str] | None = None) -> LabelledImages:
    """`root/<class>/**/*.jpg` -> labelled images; classes sorted by name unless given."""
    root = Path(root)
    if not root.is_dir():
        raise VTError(f"image folder {root} does not exist")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise VTError(f"{root} has no class folders: expected {root}/<class name>/<images>")
    names = list(classes) if classes else found
    for c in names:
        if c not in found:
            raise VTError(f"class {c!r} from data.classes has no folder in {root}{did_you_mean(c, found)}")
    paths, labels = [], []
    for i, c in enumerate(names):
        imgs = list_images(root / c)
        if not imgs:
            raise VTError(f"class folder {root / c} holds no images ({', '.join(IMAGE_SUFFIXES[:5])}, ...): "
                          "add images or remove the folder")
        paths += imgs
        labels += [i] * len(imgs)
    return LabelledImages(paths, labels, names)


def _csv_rows(path: Path, *, expected: str) -> tuple[list[dict], dict[str, str], str | None]:
    """The rows of a labels CSV, its columns by lower-cased name, and its path column (or None)."""
    if not path.is_file():
        raise VTError(f"CSV file {path} does not exist")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise VTError(f"{path} has no rows (expected a header `{expected}` and one row per image)")
    cols = {c.strip().lower(): c for c in rows[0].keys() if c}
    return rows, cols, next((cols[c] for c in ("path", "image", "file", "filename") if c in cols), None)


def read_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
             classes: list[str] | None = None) -> LabelledImages:
    """A CSV with a header naming `path` (or `image`/`file`) and `label` columns; paths relative
    to `root` (default: the CSV's folder)."""
    path = Path(path)
    base = Path(root) if root else path.parent
    rows, cols, pcol = _csv_rows(path, expected="path,label")
    lcol = next((cols[c] for c in ("label", "class", "category") if c in cols), None)
    if pcol is None or lcol is None:
        raise VTError(f"{path}: the header must name a path column and a label column (path,label); got {list(cols)}")
    labels_text = [r[lcol].strip() for r in rows]
    names = list(classes) if classes else sorted(set(labels_text))
    index = {c: i for i, c in enumerate(names)}
    paths, labels = [], []
    for n, (r, lab) in enumerate(zip(rows, labels_text), start=2):
        if lab not in index:
            raise VTError(f"{path}:{n}: label {lab!r} is not in data.classes{did_you_mean(lab, names)}")
        p = safe_join(base, r[pcol].strip(), source=f"{path}:{n}")
        if not p.is_file():
            raise VTError(f"{path}:{n}: image {r[pcol]!r} not found under {base}")
        paths.append(p)
        labels.append(index[lab])
    return LabelledImages(paths, labels, names)


@dataclass
class MultiLabelImages:
    paths: list[Path]
    labels: list[list[int]]   # the classes present in each image (possibly none)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> MultiLabelImages:
        return MultiLabelImages([self.paths[i] for i in idx], [self.labels[i] for i in idx], self.classes)

    def multi_hot(self, i: int) -> np.ndarray:
        y = np.zeros(len(self.classes), dtype=np.float32)
        y[self.labels[i]] = 1.0
        return y


LABEL_SEPARATOR = ";"


def read_multilabel_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                        classes: list[str] | None = None) -> MultiLabelImages:
    """A CSV with several labels per image, paths relative to `root` (default: the CSV's folder).
    Two layouts, told apart by the header:

    - `path,labels` with the class names of each image separated by `;` (`cat;dog`; empty: none);
      classes sorted by name unless `classes` gives them;
    - `path,<class 1>,<class 2>,...`: one 0/1 column per class, classes in column order.
    """
    path = Path(path)
    base = Path(root) if root else path.parent
    rows, cols, pcol = _csv_rows(path, expected="path,labels")
    if pcol is None:
        raise VTError(f"{path}: the header must name a path column (path,labels or path,<class>,...); "
                      f"got {list(cols)}")
    lcol = next((cols[c] for c in ("labels", "label", "tags") if c in cols), None)
    if lcol is not None:
        per_row = [[x.strip() for x in (r[lcol] or "").split(LABEL_SEPARATOR) if x.strip()] for r in rows]
        names = list(classes) if classes else sorted({x for labs in per_row for x in labs})
    else:
        class_cols = [c for c in rows[0].keys() if c and c != pcol]
        if not class_cols:
            raise VTError(f"{path}: no label columns: give a `labels` column (names separated by "
                          f"'{LABEL_SEPARATOR}') or one 0/1 column per class")
        names = list(classes) if classes else [c.strip() for c in class_cols]
        by_name = {c.strip(): c for c in class_cols}
        for c in names:
            if c not in by_name:
                raise VTError(f"{path}: class {c!r} from data.classes has no column{did_you_mean(c, by_name)}")
        extra = [c for c in by_name if c not in names]
        if extra:
            raise VTError(f"{path}: column {extra[0]!r} is not in data.classes ({', '.join(names)})")
        per_row = []
        for n, r in enumerate(rows, start=2):
            labs = []
            for c in names:
                v = (r[by_name[c]] or "").strip()
                if v not in ("0", "1"):
                    raise VTError(f"{path}:{n}: column {c!r} holds {v!r}; class columns hold 0 or 1")
                if v == "1":
                    labs.append(c)
            per_row.append(labs)
    if not names:
        raise VTError(f"{path}: no image has a label, so there are no classes (give data.classes)")
    index = {c: i for i, c in enumerate(names)}
    paths, labels = [], []
    for n, (r, labs) in enumerate(zip(rows, per_row), start=2):
        for lab in labs:
            if lab not in index:
                raise VTError(f"{path}:{n}: label {lab!r} is not in data.classes{did_you_mean(lab, names)}")
        p = safe_join(base, (r[pcol] or "").strip(), source=f"{path}:{n}")
        if not p.is_file():
            raise VTError(f"{path}:{n}: image {r[pcol]!r} not found under {base}")
        paths.append(p)
        labels.append(sorted({index[lab] for lab in labs}))
    return MultiLabelImages(paths, labels, names)


def stratified_split(items: LabelledImages, *, val_fraction: float, seed: int) -> tuple[LabelledImages, LabelledImages]:
    """Split per class (seeded) by the hold-out rule of every task (`vision_transfer.data.split`)."""
    from .split import hold_out

    train_idx, val_idx = hold_out(len(items.labels), fraction=val_fraction, seed=seed, labels=items.labels)
    return items.subset(train_idx), items.subset(val_idx)


def per_class_subset(items: LabelledImages, *, per_class: int, seed: int) -> LabelledImages:
    """At most `per_class` images of each class, chosen with `seed` (for data-size studies)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(items.labels)
    keep = []
    for c in range(len(items.classes)):
        idx = np.flatnonzero(labels == c)
        keep += rng.permutation(idx)[:per_class].tolist()
    return items.subset(sorted(keep))
