"""Real small images that ship offline: scikit-learn's 1,797 handwritten digits (8x8 grey, 10
classes, at least 174 per class), written as PNG class folders for examples, tests and benchmarks.

    root = write_digits_folders(Path("digits"), train_per_class=20, val_per_class=50)
    # digits/train/<0..9>/*.png and digits/val/<0..9>/*.png, disjoint, seeded
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_folders(root: Path, *, train_per_class: int, val_per_class: int, size: int = 28,
                         seed: int = 0) -> Path:
    """Disjoint, seeded train/val class folders of digits upscaled (bicubic) to `size` px."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - a dev extra
        from ..errors import VTError

        raise VTError("the digits need scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(root)
    for label in range(10):
        rows = rng.permutation(np.flatnonzero(digits.target == label))
        if train_per_class + val_per_class > len(rows):
            raise ValueError(f"digit {label} has only {len(rows)} images")
        for split, chosen in (("train", rows[:train_per_class]),
                              ("val", rows[train_per_class:train_per_class + val_per_class])):
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for r in chosen:
                grey = (digits.images[r] / 16.0 * 255).astype(np.uint8)
                Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BICUBIC).save(d / f"{r:04d}.png")
    return root
