"""Checks of COCO ground truth and COCO results before evaluation, with one-line errors.

pycocotools answers bad input with an `AssertionError`, a `KeyError` deep in `evaluateImg`, or
silently wrong numbers (a category id absent from the ground truth is simply skipped). These
checks run first and raise `VTError` naming the first bad entry and how many entries are bad.

Formats (https://cocodataset.org/#format-data):
- ground truth: `{"images": [{"id", "height", "width", ...}], "annotations": [{"id", "image_id",
  "category_id", "bbox": [x, y, w, h], "area", "iscrowd", "segmentation"}], "categories":
  [{"id", "name"}]}`
- results: `[{"image_id", "category_id", "score", "bbox": [x, y, w, h]}, ...]`, and for `segm`
  a compressed RLE `"segmentation": {"size": [h, w], "counts": str}` per entry.

Only the standard library: the model-free CLI path imports this before anything heavy.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import VTError

IOU_TYPES = ("bbox", "segm")
_NUMBER = (int, float)


def load_json(path: str | os.PathLike, *, what: str) -> Any:
    """Read a JSON file; a missing, empty or unparsable file is a one-line `VTError`."""
    if not os.path.isfile(path):
        raise VTError(f"{what} {os.fspath(path)!r} does not exist or is not a file")
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise VTError(f"{what} {os.fspath(path)!r} is empty; expected COCO JSON")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VTError(f"{what} {os.fspath(path)!r} is not valid JSON ({e})") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool) and math.isfinite(v)


def _bbox_problem(b: Any) -> str | None:
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        return f"bbox must be 4 numbers [x, y, w, h], got {_short(b)}"
    if not all(_is_number(v) for v in b):
        return f"bbox has a non-numeric or non-finite value: {_short(b)}"
    if b[2] < 0 or b[3] < 0:
        return f"bbox has a negative width or height: {_short(b)}"
    return None


def _rle_problem(seg: Any, size: tuple[int, int] | None) -> str | None:
    if not isinstance(seg, Mapping) or "counts" not in seg or "size" not in seg:
        return f"segmentation must be a compressed RLE {{'size': [h, w], 'counts': str}}, got {_short(seg)}"
    if not isinstance(seg["counts"], (str, bytes)):
        return "segmentation counts must be a compressed RLE string (pycocotools.mask.encode gives one)"
    s = seg["size"]
    if not isinstance(s, (list, tuple)) or len(s) != 2 or not all(isinstance(v, int) for v in s):
        return f"segmentation size must be [height, width], got {_short(s)}"
    if size is not None and tuple(s) != size:
        return f"segmentation size {list(s)} differs from the image's [height, width] {list(size)}"
    return None


def _short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _report(where: str, kind: str, bad: int, total: int, first: int, problem: str, hint: str = "") -> VTError:
    return VTError(f"{where}: {bad} of {total} {kind} are bad; first is entry {first}: {problem}{hint}")


def validate_gt(gt: Any, *, iou_type: str = "bbox", source: str = "ground truth") -> None:
    """Raise `VTError` unless `gt` is a COCO ground-truth dict that pycocotools can evaluate."""
    if iou_type not in IOU_TYPES:
        raise VTError(f"iou_type {iou_type!r} is not supported; valid: {', '.join(IOU_TYPES)}")
    if not isinstance(gt, Mapping):
        raise VTError(f"{source} is not COCO ground truth: expected a JSON object with images, annotations and "
                      f"categories, got a {type(gt).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(gt.get(k), list)]
    if missing:
        raise VTError(f"{source} is not COCO ground truth: no {' / '.join(missing)} list "
                      "(a COCO file has images, annotations and categories)")
    _check_entries(gt["images"], _image_problem(iou_type), where=source, kind="images")
    _check_entries(gt["categories"], _category_problem, where=source, kind="categories")
    if not gt["images"] or not gt["categories"]:
        raise VTError(f"{source} has no {'images' if not gt['images'] else 'categories'}; nothing to evaluate")
    _check_entries(gt["annotations"], _gt_ann_problem(iou_type), where=source, kind="annotations")


def _image_problem(iou_type: str) -> Callable[[Any], str | None]:
    def problem(im: Any) -> str | None:
        if not isinstance(im, Mapping) or not isinstance(im.get("id"), int):
            return f"image needs an integer id, got {_short(im)}"
        if iou_type == "segm" and not (isinstance(im.get("height"), int) and isinstance(im.get("width"), int)):
            return f"image {im['id']} needs integer height and width for segm evaluation"
        return None
    return problem


def _category_problem(c: Any) -> str | None:
    if not isinstance(c, Mapping) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
        return f"category needs an integer id and a string name, got {_short(c)}"
    return None


def _gt_ann_problem(iou_type: str) -> Callable[[Any], str | None]:
    def problem(a: Any) -> str | None:
        if not isinstance(a, Mapping):
            return f"annotation must be an object, got {_short(a)}"
        for key in ("id", "image_id", "category_id", "area"):
            if key not in a:
                return f"annotation has no {key!r}"
        if iou_type == "bbox":
            return _bbox_problem(a.get("bbox"))
        seg = a.get("segmentation")
        if not isinstance(seg, (list, Mapping)) or (isinstance(seg, list) and not seg):
            return "annotation needs polygons (a non-empty list) or an RLE 'segmentation' for segm evaluation"
        return None
    return problem


def _check_entries(items: list, problem: Callable[[Any], str | None], *, where: str, kind: str,
                   hint: str = "") -> None:
    first, first_problem, bad = -1, "", 0
    for i, item in enumerate(items):
        p = problem(item)
        if p is not None:
            bad += 1
            if first < 0:
                first, first_problem = i, p
    if bad:
        raise _report(where, kind, bad, len(items), first, first_problem, hint)


def validate_results(results: Any, gt: Mapping, *, iou_type: str = "bbox", source: str = "results") -> None:
    """Raise `VTError` unless `results` is a non-empty COCO results list consistent with `gt`.

    Checks every entry: an object with `image_id` and `category_id` present in `gt`, a finite
    numeric `score`, a bbox of 4 finite numbers with w, h >= 0 (required for bbox, checked when
    present for segm), and for segm a compressed RLE the size of its image. The error names the
    first bad entry (0-based index) and the number of bad entries. `gt` must pass `validate_gt`.
    """
    if not isinstance(results, list):
        raise VTError(f"{source} is not a COCO results list: expected a JSON array of "
                      f"{{image_id, category_id, bbox, score}} objects, got a {type(results).__name__}")
    if not results:
        raise VTError(f"{source} is an empty list: no detections to evaluate")
    img_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    sizes = ({im["id"]: (im["height"], im["width"]) for im in gt["images"]} if iou_type == "segm" else None)
    bad_at = [i for i, r in enumerate(results) if not _fast_ok(r, img_ids, cat_ids, iou_type, sizes)]
    if not bad_at:
        return
    first = bad_at[0]
    problem = _result_problem(results[first], img_ids, cat_ids, iou_type, sizes) or "malformed entry"
    hint = ""
    if "image_id" in problem and "not in the ground truth" in problem:
        hint = f" (the ground truth has {len(img_ids)} images, ids {min(img_ids)}..{max(img_ids)})"
    elif "category_id" in problem and "not in the ground truth" in problem:
        hint = f" (valid category ids: {_short(sorted(cat_ids), 80)})"
    raise _report(source, "entries", len(bad_at), len(results), first, problem, hint)


def _fast_ok(r: Any, img_ids: set, cat_ids: set, iou_type: str, sizes: dict | None) -> bool:
    """The common all-good case, quickly (about 1 us an entry); details come from `_result_problem`."""
    try:
        if r["image_id"] not in img_ids or r["category_id"] not in cat_ids:
            return False
        s = r["score"]
        if "bbox" in r or iou_type == "bbox":
            x, y, w, h = r["bbox"]
            if not (w >= 0 and h >= 0):
                return False
            s = s + x + y + w + h
        if sizes is not None and _rle_problem(r["segmentation"], sizes[r["image_id"]]) is not None:
            return False
        # A sum of finite numbers is finite: one check for NaN, inf and (via TypeError) strings.
        return math.isfinite(s) and type(r["score"]) is not bool
    except (TypeError, ValueError, KeyError):
        return False


def _result_problem(r: Any, img_ids: set, cat_ids: set, iou_type: str,
                    sizes: dict | None) -> str | None:
    if not isinstance(r, Mapping):
        return f"expected an object, got {_short(r)}"
    for key in ("image_id", "category_id"):
        if key not in r:
            return f"no {key!r}"
    try:
        if r["image_id"] not in img_ids:
            return f"image_id {_short(r['image_id'])} is not in the ground truth"
        if r["category_id"] not in cat_ids:
            return f"category_id {_short(r['category_id'])} is not in the ground truth"
    except TypeError:
        return f"image_id and category_id must be integers, got {_short(r['image_id'])}, {_short(r['category_id'])}"
    if "score" not in r:
        return "no 'score'"
    if not _is_number(r["score"]):
        return f"score must be a finite number, got {_short(r['score'])}"
    if iou_type == "bbox" and "bbox" not in r:
        return "no 'bbox'"
    if "bbox" in r and (p := _bbox_problem(r["bbox"])):
        return p
    if iou_type == "segm":
        if "segmentation" not in r:
            return "no 'segmentation' (segm results need a compressed RLE per entry)"
        return _rle_problem(r["segmentation"], sizes.get(r["image_id"]) if sizes else None)
    return None
