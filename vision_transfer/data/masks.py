"""Semantic masks from disk: mask folders and COCO polygons / RLE.

A mask folder pairs `images/<name>.<ext>` with `masks/<name>.png` (the same relative path, any
image suffix). A mask holds one class index per pixel, 255 = ignore:

- grey (L, I;16), 1-bit or palette-mode ("P", as in Pascal VOC) PNGs: the pixel values are the
  class indices;
- RGB(A) colour masks: `palette` maps colours to classes, either `{class name: [r, g, b]}`
  (the key "ignore" maps a colour to 255) or `[[r, g, b], ...]` in class order. An RGB mask
  whose three channels are equal is read as grey.

    pairs, info = pair_masks("data/images", "data/masks")   # [(image, mask)], {"images_without_mask": 2}
    mask = read_mask(pairs[0][1], num_classes=2)             # (H, W) int64 in {0, 1, 255}

COCO instance annotations become one semantic mask per image with `coco_semantic_mask`:
label + 1 per object (0 = background), crowd regions = 255, larger objects painted first so
small ones stay visible where they overlap.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import VTError
from .image import list_images

IGNORE_INDEX = 255
Palette = Mapping[str, Sequence[int]] | Sequence[Sequence[int]]


def pair_masks(images: str | os.PathLike, masks: str | os.PathLike) -> tuple[list[tuple[Path, Path]], dict[str, int]]:
    """`([(image path, mask path)], counts)`: pairs by relative path without suffix.

    Images without a mask and masks without an image are counted, not fatal; no pair at all is
    a `VTError`."""
    img_root, mask_root = Path(images), Path(masks)
    for what, root in (("images", img_root), ("masks", mask_root)):
        if not root.is_dir():
            raise VTError(f"{what} folder {root} does not exist (data.train.{what} / data.val.{what})")
    by_key = {_key(p, mask_root): p for p in list_images(mask_root)}
    pairs, info = [], Counter()
    for img in list_images(img_root):
        m = by_key.pop(_key(img, img_root), None)
        if m is None:
            info["images_without_mask"] += 1
        else:
            pairs.append((img, m))
    if by_key:
        info["masks_without_image"] += len(by_key)
    if not pairs:
        raise VTError(f"no image in {img_root} has a mask in {mask_root}: masks need the same name as their "
                      "image (images/a.jpg <-> masks/a.png)")
    return pairs, dict(info)


def _key(p: Path, root: Path) -> str:
    return p.relative_to(root).with_suffix("").as_posix()


def palette_lookup(palette: Palette, classes: Sequence[str]) -> dict[tuple[int, int, int], int]:
    """`{(r, g, b): class index}` (255 for the "ignore" colour) from `data.palette`."""
    if isinstance(palette, Mapping):
        out = {}
        for name, rgb in palette.items():
            if name in ("ignore", str(IGNORE_INDEX)):
                out[_rgb(rgb, name)] = IGNORE_INDEX
            elif name in classes:
                out[_rgb(rgb, name)] = list(classes).index(name)
            else:
                from ..errors import did_you_mean

                raise VTError(f"data.palette names {name!r}, which is not in data.classes"
                              f"{did_you_mean(name, list(classes) + ['ignore'])}")
        return out
    if len(palette) != len(classes):
        raise VTError(f"data.palette lists {len(palette)} colours for {len(classes)} classes: "
                      "give one [r, g, b] per class, in the order of data.classes")
    return {_rgb(rgb, str(i)): i for i, rgb in enumerate(palette)}


def _rgb(v: Any, name: str) -> tuple[int, int, int]:
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v)):
        raise VTError(f"data.palette colour of {name!r} is {v!r}; expected [r, g, b] with values 0..255")
    return int(v[0]), int(v[1]), int(v[2])


def read_mask(path: str | os.PathLike, *, num_classes: int,
              colours: Mapping[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """`(H, W)` int64 class indices (255 = ignore) of a mask file, checked against `num_classes`.

    `colours`: `palette_lookup(...)` for RGB masks. Values or colours outside the class list are
    a one-line `VTError` naming the file (usually `data.classes` or `data.palette` is wrong)."""
    try:
        with Image.open(path) as im:
            im.load()
            if colours is not None and im.mode not in ("L", "I", "I;16", "1"):
                return _map_colours(np.asarray(im.convert("RGB")), colours, path)
            if im.mode in ("RGB", "RGBA", "LA"):
                rgb = np.asarray(im.convert("RGB"))
                if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
                    raise VTError(f"mask {path} is a colour image: {_palette_hint(rgb)}, "
                                  "or save masks as grey PNGs of class indices")
                mask = rgb[..., 0].astype(np.int64)
            else:
                mask = np.asarray(im).astype(np.int64)
    except (OSError, ValueError, SyntaxError) as e:   # zero bytes, truncated, not an image
        from .image import BadImage

        if isinstance(e, FileNotFoundError):
            raise
        raise BadImage(f"mask {path} cannot be decoded ({type(e).__name__})", "unreadable") from None
    check_mask_values(mask, num_classes=num_classes, where=str(path))
    return mask


def _palette_hint(rgb: np.ndarray) -> str:
    """`looks like a colour palette (colours [0, 0, 0], [255, 0, 0]): pass data.palette=...`."""
    colours = np.unique(rgb.reshape(-1, 3), axis=0)[:6].tolist()
    shown = ", ".join(str(c) for c in colours[:4]) + (", ..." if len(colours) > 4 else "")
    example = "{" + ", ".join(f"class{i}: {c}" for i, c in enumerate(colours[:2])) + "}"
    return f"looks like a colour palette (colours {shown}): pass data.palette='{example}' (class -> [r, g, b])"


def _map_colours(rgb: np.ndarray, colours: Mapping[tuple[int, int, int], int], path: Any) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=np.int64)
    values = np.array(list(colours.values()), dtype=np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    known = keys[pos] == code
    if not known.all():
        c = int(code[~known][0])
        raise VTError(f"mask {path} has colour {[c >> 16, (c >> 8) & 255, c & 255]} ({int((~known).sum())} pixels), "
                      "which data.palette does not list (map it to a class or to 'ignore')")
    return values[pos]


def check_mask_values(mask: np.ndarray, *, num_classes: int, where: str) -> None:
    """Every value must be a class index `0..num_classes-1` or 255 (ignore)."""
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != IGNORE_INDEX)]
    if bad.size:
        raise VTError(f"mask {where} holds value {int(bad[0])} ({', '.join(map(str, bad[:5].tolist()))}"
                      f"{', ...' if bad.size > 5 else ''}) but there are {num_classes} classes (0..{num_classes - 1}, "
                      "255 = ignore): check data.classes")


def coco_semantic_mask(annotations: Iterable[Any], *, height: int, width: int) -> tuple[np.ndarray, int]:
    """`((H, W) int64 mask, annotations without a usable segmentation)` of one image.

    `annotations`: objects with `.segmentation` (polygons `[[x1, y1, ...], ...]`, an RLE dict,
    compressed or not), `.label` (0-based class of the COCO file), `.iscrowd` and `.area`."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((height, width), np.int64)
    skipped = 0
    for a in sorted(annotations, key=lambda a: -float(a.area or 0)):
        seg = a.segmentation
        try:
            if isinstance(seg, list):
                seg = [p for p in seg if isinstance(p, list) and len(p) >= 6]
                if not seg:
                    raise ValueError("no polygon with 3 points")
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, height, width)
            elif isinstance(seg, dict):
                rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
            else:
                raise ValueError("no segmentation")
            m = mask_utils.decode(rle).astype(bool)
        except (ValueError, TypeError, KeyError):
            skipped += 1
            continue
        if m.shape != mask.shape:
            skipped += 1
            continue
        mask[m] = IGNORE_INDEX if a.iscrowd else int(a.label) + 1
    return mask, skipped
