"""Decoding images into the one in-memory format: HxWx3 uint8 RGB.

EXIF orientation is applied; grey, grey+alpha, palette, RGBA (alpha dropped), CMYK and 16-bit
images are converted. A file that cannot be decoded raises `BadImage`,
which datasets count and skip instead of crashing mid-epoch.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)


class BadImage(Exception):
    """An image file that exists but cannot be decoded. `reason` is one of
    `vision_transfer.report.SKIP_REASONS` (zero-byte, truncated, not-an-image, too-large, unreadable)."""

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


def _bad(path, e: BaseException) -> BadImage:
    """The BadImage for a decoder failure, with the reason a user can act on."""
    from ..report import show_path

    text = str(e).splitlines()[0][:120] if str(e) else "unreadable"
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BadImage(f"{show_path(path)}: too large to decode safely ({text}); resize it, or raise "
                        "PIL.Image.MAX_IMAGE_PIXELS if you trust the file", "too-large")
    if isinstance(e, UnidentifiedImageError):
        reason = "zero-byte" if os.path.getsize(path) == 0 else "not-an-image"
        return BadImage(f"{show_path(path)}: {'empty file' if reason == 'zero-byte' else 'not an image'}", reason)
    if "truncated" in text or "broken data stream" in text or isinstance(e, SyntaxError):
        return BadImage(f"{show_path(path)}: truncated ({text})", "truncated")
    return BadImage(f"{show_path(path)}: {type(e).__name__}: {text}", "unreadable")


@contextlib.contextmanager
def _opened(path: str | os.PathLike) -> Iterator[Image.Image]:
    """`Image.open` that refuses decompression bombs: PIL only warns between 1x and 2x
    `MAX_IMAGE_PIXELS`, and a warning is not a refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            yield im


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read `path` as an `(H, W, 3)` uint8 RGB array (EXIF orientation applied)."""
    try:
        with _opened(path) as im:
            im = ImageOps.exif_transpose(im)
            return to_rgb_uint8(im)
    except FileNotFoundError:
        raise
    except _DECODE_ERRORS as e:
        raise _bad(path, e) from None


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """`(width, height)` as `read_image` returns it (EXIF rotation applied), after a full decode
    (a truncated JPEG parses its header fine and fails only here). Raises `BadImage` with a
    reason, or FileNotFoundError."""
    if os.path.getsize(path) == 0:
        from ..report import show_path

        raise BadImage(f"{show_path(path)}: empty file", "zero-byte")
    try:
        with _opened(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))   # DCT-scaled: every byte read, 1/64 the work
            im.load()
    except FileNotFoundError:
        raise
    except _DECODE_ERRORS as e:
        raise _bad(path, e) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


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


def safe_join(root: str | os.PathLike, relative: str, *, source: str | None = None) -> Path:
    """`root / relative`, refusing paths (from a data file: `source`, e.g. `coco.json image id 3`)
    that escape `root`: `../`, absolute paths, symlinks pointing out."""
    from ..errors import VTError

    root_r = Path(root).resolve()
    p = (root_r / relative).resolve()
    if p != root_r and root_r not in p.parents:
        where = f"{source}: path" if source else "path"
        raise VTError(f"{where} {relative!r} escapes its root {root}: file names must be relative paths inside it "
                      "(no '../', no absolute paths)")
    return p
