"""Decoding images into the one in-memory format: HxWx3 uint8 RGB.

EXIF orientation is applied; grey, grey+alpha, palette, RGBA (alpha dropped), CMYK and 16-bit
images are converted. A file that cannot be decoded raises `BadImage`,
which datasets count and skip instead of crashing mid-epoch.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


class BadImage(Exception):
    """An image file that exists but cannot be decoded (zero bytes, truncated, not an image)."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read `path` as an `(H, W, 3)` uint8 RGB array (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return to_rgb_uint8(im)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}") from None


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        a = np.rint(a).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def list_images(root: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Image files below `root` (sorted, hidden files skipped)."""
    root = Path(root)
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def safe_join(root: str | os.PathLike, relative: str) -> Path:
    """`root / relative`, refusing paths (from a data file) that escape `root`."""
    from ..errors import VTError

    root_r = Path(root).resolve()
    p = (root_r / relative).resolve()
    if p != root_r and root_r not in p.parents:
        raise VTError(f"path {relative!r} in a data file escapes its root {root}; paths must stay inside it")
    return p
