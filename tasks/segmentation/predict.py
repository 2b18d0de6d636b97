"""Label masks and overlays: what `vt predict segmentation` writes per input image.

- `<stem>.png`: the label mask at the input's own size, one class index per pixel (8-bit grey,
  16-bit when there are more than 256 classes);
- `<stem>_overlay.png`: the image with each class but "background" tinted in its colour, and a
  legend strip below it naming the colours;
- `predictions.json`: `[{"image", "mask", "overlay", "class_pixels": {class: count}}]`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from vision_transfer.files import atomic_path

# distinct colours (tab10 then tab20's light tones); class i gets COLOURS[i % len]
COLOURS = np.array([
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120],
    [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [219, 219, 141]],
    dtype=np.uint8)


def class_colours(classes: Sequence[str], palette: Any = None) -> np.ndarray:
    """`(C, 3)` uint8: `data.palette` colours where given, else a fixed table."""
    out = np.array([COLOURS[i % len(COLOURS)] for i in range(len(classes))], dtype=np.uint8).reshape(-1, 3)
    if isinstance(palette, dict):
        for name, rgb in palette.items():
            if name in classes:
                out[list(classes).index(name)] = rgb
    elif isinstance(palette, list) and len(palette) == len(classes):
        out[:] = np.array(palette, dtype=np.uint8)
    return out


@torch.inference_mode()
def predict_masks(model: torch.nn.Module, images: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Label masks `(H_i, W_i)` int64 of a batch `(N, 3, S, S)`: logits resized bilinearly to each
    target size, then argmax (the same path for evaluation and `vt predict`)."""
    logits = model(images).float()
    out = []
    for i, hw in enumerate(sizes):
        li = logits[i:i + 1]
        if tuple(li.shape[-2:]) != tuple(hw):
            li = F.interpolate(li, size=tuple(hw), mode="bilinear", align_corners=False)
        out.append(li[0].argmax(0))
    return out


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_label_mask(mask: np.ndarray, path: Path, num_classes: int) -> None:
    arr = mask.astype(np.uint8 if num_classes <= 256 else np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def overlay(image: np.ndarray, mask: np.ndarray, classes: Sequence[str], colours: np.ndarray,
            alpha: float = 0.5) -> Image.Image:
    """The image with classes tinted (background left as is) and a legend strip below."""
    out = image.astype(np.float32)
    shown = [i for i, c in enumerate(classes) if c.lower() not in ("background", "_background_", "bg")]
    for i in shown:
        m = mask == i
        out[m] = (1 - alpha) * out[m] + alpha * colours[i]
    body = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    return _with_legend(body, [(classes[i], tuple(int(v) for v in colours[i])) for i in shown])


def _with_legend(body: Image.Image, entries: list[tuple[str, tuple[int, int, int]]]) -> Image.Image:
    font = ImageFont.load_default()
    row_h, pad = 14, 4
    width = max(body.width, 160)
    # lay entries out left to right, wrapping at the image width
    rows, x = [[]], pad
    for name, rgb in entries:
        w = 12 + 4 + int(ImageDraw.Draw(body).textlength(name, font=font)) + 10
        if x + w > width and rows[-1]:
            rows.append([])
            x = pad
        rows[-1].append((x, name, rgb))
        x += w
    canvas = Image.new("RGB", (width, body.height + pad * 2 + row_h * len(rows)), (255, 255, 255))
    canvas.paste(body, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = body.height + pad + r * row_h
        for x0, name, rgb in row:
            draw.rectangle([x0, y + 1, x0 + 11, y + 11], fill=rgb, outline=(0, 0, 0))
            draw.text((x0 + 16, y), name, fill=(0, 0, 0), font=font)
    return canvas


