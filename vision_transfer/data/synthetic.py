"""Generated scenes of shapes with exact boxes and masks, for tests, examples and quick checks.

Each scene is an RGB image with a few filled shapes (class 0 = square, 1 = disc, 2 = triangle)
on a textured background; boxes are the exact pixel extents of each shape's mask.

    scene = make_scene(seed=0, size=96)
    scene["image"]  # (96, 96, 3) uint8
    scene["boxes"]  # (N, 4) float32 xyxy, exclusive right/bottom edge (x2 = last column + 1)
    scene["labels"]  # (N,) int64 in 0..2
    scene["mask"]   # (96, 96) int64 semantic mask: 0 background, 1 + label for shapes
    scene["instance_masks"]  # (N, 96, 96) bool
"""
from __future__ import annotations

import numpy as np

SHAPE_CLASSES = ("square", "disc", "triangle")
COLOURS = np.array([[220, 60, 60], [60, 200, 80], [70, 90, 230]], dtype=np.float64)


def _shape_mask(kind: int, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    if kind == 0:
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    if kind == 1:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    # triangle pointing up: apex (cx, cy - r), base y = cy + r
    inside_y = (yy >= cy - r) & (yy <= cy + r)
    half = (yy - (cy - r)) / 2.0
    return inside_y & (np.abs(xx - cx) <= half)


def make_scene(*, seed: int, size: int = 96, max_objects: int = 3, min_radius: int = 6,
               max_radius: int | None = None, classes: int = 3) -> dict:
    """One scene; shapes do not overlap, so every instance mask is exact."""
    rng = np.random.default_rng(seed)
    max_radius = max_radius or max(min_radius + 1, size // 6)
    image = rng.normal(110, 12, (size, size, 3))
    occupied = np.zeros((size, size), bool)
    masks, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(0, classes))
            r = float(rng.integers(min_radius, max_radius + 1))
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            m = _shape_mask(kind, cx, cy, r, size)
            if m.sum() >= 9 and not (m & _dilate(occupied)).any():
                occupied |= m
                masks.append(m)
                labels.append(kind)
                image[m] = COLOURS[kind] + rng.normal(0, 8, (m.sum(), 3))
                break
    image = np.clip(image, 0, 255).astype(np.uint8)
    boxes = np.array([_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
    semantic = np.zeros((size, size), np.int64)
    for m, lab in zip(masks, labels):
        semantic[m] = lab + 1
    inst = np.stack(masks) if masks else np.zeros((0, size, size), bool)
    return {"image": image, "boxes": boxes, "labels": np.array(labels, np.int64), "mask": semantic,
            "instance_masks": inst}


def _box(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _dilate(m: np.ndarray, k: int = 2) -> np.ndarray:
    out = m.copy()
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            out |= np.roll(np.roll(m, dy, 0), dx, 1)
    return out


def make_classification_images(*, per_class: int, classes: int = 3, size: int = 48, seed: int = 0):
    """`[(image, label)]`: one centred shape per image, label = shape class."""
    rng = np.random.default_rng(seed)
    out = []
    for label in range(classes):
        for _ in range(per_class):
            img = rng.normal(110, 12, (size, size, 3))
            r = rng.uniform(size * 0.18, size * 0.32)
            cx, cy = rng.uniform(size * 0.4, size * 0.6, 2)
            m = _shape_mask(label, cx, cy, r, size)
            img[m] = COLOURS[label] + rng.normal(0, 10, (m.sum(), 3))
            out.append((np.clip(img, 0, 255).astype(np.uint8), label))
    return out
