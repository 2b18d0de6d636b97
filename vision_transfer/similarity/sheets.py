"""Contact sheets (a query beside its neighbours, with scores) and montages (a cluster's members), PIL only.

Every tile is the image fitted into a `tile x tile` square on a light background with a caption
below; the query tile has a blue frame. Unreadable images become a grey tile saying so.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..data.image import BadImage, read_image
from ..files import atomic_path

BACKGROUND = (245, 245, 245)
QUERY_FRAME = (40, 90, 200)
CAPTION_H = 30
PAD = 6


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font, no size
        return ImageFont.load_default()


def _thumbnail(path: str | os.PathLike, tile: int) -> Image.Image:
    try:
        im = Image.fromarray(read_image(path))
    except (BadImage, FileNotFoundError):
        im = Image.new("RGB", (tile, tile), (160, 160, 160))
        ImageDraw.Draw(im).text((4, tile // 2 - 6), "unreadable", fill=(255, 255, 255), font=_font())
        return im
    scale = tile / max(im.size)
    resample = Image.Resampling.NEAREST if scale >= 4 else Image.Resampling.BICUBIC  # keep tiny images crisp
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, resample)


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def display_name(path: str | os.PathLike) -> str:
    """`folder/file`: the class folder shows in captions."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _tile(path: str | os.PathLike, lines: Sequence[str], tile: int, frame: tuple | None) -> Image.Image:
    out = Image.new("RGB", (tile + 2 * PAD, tile + 2 * PAD + CAPTION_H), BACKGROUND)
    thumb = _thumbnail(path, tile)
    out.paste(thumb, (PAD + (tile - thumb.width) // 2, PAD + (tile - thumb.height) // 2))
    draw = ImageDraw.Draw(out)
    if frame is not None:
        draw.rectangle([1, 1, out.width - 2, tile + 2 * PAD - 2], outline=frame, width=3)
    font = _font()
    for j, line in enumerate(lines[:2]):
        draw.text((PAD, tile + 2 * PAD + j * 13), _short(line, max(8, tile // 6)), fill=(20, 20, 20), font=font)
    return out


def _grid(tiles: Sequence[Image.Image], cols: int) -> Image.Image:
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), BACKGROUND)
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    return sheet


def _save(image: Image.Image, out: Path) -> Path:
    with atomic_path(out) as tmp:
        image.save(tmp)
    return out


def contact_sheet(query: str | os.PathLike, neighbors: Sequence[tuple[str, float]], out: str | os.PathLike,
                  *, tile: int = 128) -> Path:
    """Write one row: the query (framed), then each `(path, score)` neighbour, best first. Returns `out`."""
    tiles = [_tile(query, ["query", display_name(query)], tile, QUERY_FRAME)]
    tiles += [_tile(p, [f"#{i + 1}  {score:.3f}", display_name(p)], tile, None)
              for i, (p, score) in enumerate(neighbors)]
    return _save(_grid(tiles, cols=len(tiles)), Path(out))


def montage(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, title: str = "",
            captions: Sequence[str] | None = None, tile: int = 96, cols: int = 8) -> Path:
    """Write a grid of `paths` under a one-line title; a caption has up to two lines ("a\\nb"). Returns `out`."""
    captions = captions or [display_name(p) for p in paths]
    tiles = [_tile(p, c.split("\n"), tile, None) for p, c in zip(paths, captions)]
    tiles = tiles or [_tile("", ["(empty)"], tile, None)]
    grid = _grid(tiles, cols=min(cols, len(tiles)))
    sheet = Image.new("RGB", (max(grid.width, 240), grid.height + 22), BACKGROUND)
    sheet.paste(grid, (0, 22))
    ImageDraw.Draw(sheet).text((PAD, 4), title, fill=(20, 20, 20), font=_font(13))
    return _save(sheet, Path(out))
