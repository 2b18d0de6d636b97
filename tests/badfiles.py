"""Generators of bad inputs for the corpus (tests/test_bad_inputs.py) and for `vt doctor`.

Every function writes one bad thing and returns its path; none needs a file from outside. Good data
comes from `vision_transfer.data.synthetic` (shapes with exact boxes and masks), so a test can plant
one bad item in an otherwise clean dataset.

    good_image(dir / "a.png")            # 24x24 RGB shapes
    truncated_jpeg(dir / "b.jpg")        # a JPEG cut in half: the header parses, decoding fails
    bomb_png(dir / "c.png")              # 40000 x 40000 declared in 60 bytes
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from vision_transfer.data.synthetic import SHAPE_CLASSES, make_scene

SIZE = 24


def _pixels(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return make_scene(seed=seed, size=size, min_radius=3)["image"]


def good_image(path: Path, *, seed: int = 0, size: int = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed, size)).save(path)
    return path


# -- images ---------------------------------------------------------------------------------

def zero_byte(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated_jpeg(path: Path, *, seed: int = 0) -> Path:
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed, 64)).save(buf, format="JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def not_an_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is a text file saved with an image suffix\n")
    return path


def cmyk_jpeg(path: Path, *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed)).convert("CMYK").save(path, format="JPEG")
    return path


def png16(path: Path, *, seed: int = 0) -> Path:
    grey = _pixels(seed).mean(2).astype(np.uint16) * 257
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(path)   # mode I;16
    return path


def palette_transparent_png(path: Path, *, seed: int = 0) -> Path:
    im = Image.fromarray(_pixels(seed)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, transparency=0)
    return path


def grey_png(path: Path, *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed)).convert("L").save(path)
    return path


def rgba_png(path: Path, *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(seed)).convert("RGBA").save(path)
    return path


def exif_rotated_jpeg(path: Path, pixels: np.ndarray) -> Path:
    """`pixels` (H, W, 3) stored rotated (W x H on disk) with EXIF orientation 6 ("rotate 90° CW to
    view"): a correct reader returns `pixels` again (up to JPEG loss)."""
    stored = np.rot90(pixels, k=1)   # 90° counter-clockwise; the viewer turns it back clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(stored)).save(path, format="JPEG", quality=98, exif=exif)
    return path


def bomb_png(path: Path, *, side: int = 40_000) -> Path:
    """A PNG that declares side x side pixels (a decompression bomb) in a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)   # 8-bit grey
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def one_pixel(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1), (200, 30, 30)).save(path)
    return path


def non_utf8_name(folder: Path, *, seed: int = 0) -> Path:
    """An image whose file name is not valid UTF-8 (Latin-1 'café'), as old cameras and Windows
    shares write them; Python sees it with a surrogate escape."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed)).save(buf, format="PNG")
    with open(raw, "wb") as f:
        f.write(buf.getvalue())
    return Path(os.fsdecode(raw))


def symlink_loop(folder: Path) -> Path:
    """`loop_a.png -> loop_b.png -> loop_a.png` and a folder link `self -> .` inside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    os.symlink(".", folder / "self")
    return folder / "loop_a.png"


# -- datasets -------------------------------------------------------------------------------

def class_folder(root: Path, *, per_class: int = 3, classes=("square", "disc"), size: int = SIZE,
                 seed: int = 0) -> Path:
    """`root/<class>/<i>.png`: tiny clean images, one folder per class (split by data.val_split);
    a different `seed` gives different pictures (a val folder that does not leak)."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            good_image(root / name / f"{name}_{i}.png", seed=10_000 * seed + 100 * c + i, size=size)
    return root


def coco_set(root: Path, *, n: int = 4, size: int = 32) -> dict:
    """`root/images/*.png` + a COCO dict (returned, and written to root/coco.json)."""
    images, anns = [], []
    for i in range(n):
        s = make_scene(seed=i, size=size, min_radius=4)
        name = f"im{i}.png"
        good_image(root / "images" / name, seed=i, size=size)
        Image.fromarray(s["image"]).save(root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for (x1, y1, x2, y2), lab in zip(s["boxes"].tolist(), s["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": lab + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(SHAPE_CLASSES)]}
    write_json(root / "coco.json", coco)
    return coco


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def mask_set(root: Path, *, n: int = 4, size: int = SIZE) -> Path:
    """`root/images/*.png` + `root/masks/*.png` (grey class indices 0..3)."""
    for i in range(n):
        s = make_scene(seed=i, size=size, min_radius=3)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(s["image"]).save(root / "images" / f"m{i}.png")
        Image.fromarray(s["mask"].astype(np.uint8)).save(root / "masks" / f"m{i}.png")
    return root


# -- checkpoints ----------------------------------------------------------------------------

class _RunsCode:
    """Unpickling this writes `marker` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_running_pickle(path: Path, marker: Path) -> Path:
    """A `.pt` whose unpickling would create `marker` (torch.load without weights_only runs it)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "vision_transfer/1", "task": "classification", "payload": _RunsCode(str(marker))}, path)
    return path


def truncated_file(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: len(data) // 2])
    return dst
