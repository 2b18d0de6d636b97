"""A digits domain pair from data that ships in packages, built the way Ganin et al. 2016 built MNIST-M.

Source "digits": scikit-learn's 8x8 handwritten digits (`load_digits`, 1,797 images, 0-16 grey levels)
upscaled to `px` pixels, grey on black. Target "digits_m": the *other* half of the digits (images the
source never had), each blended with a random colour patch cut from scikit-image's sample photos as
|patch - digit| per channel (MNIST-M's rule, with BSDS500 replaced by photos that load offline).

    root/digits/{train,val}/{0..9}/*.png       labelled source
    root/digits_m/unlabelled/*.png             target images a method may see (no labels)
    root/digits_m/test/{0..9}/*.png            labelled target, scored only
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photos() -> list[np.ndarray]:
    """The RGB uint8 sample photos of scikit-image (bundled with the package: no download)."""
    import skimage.data

    return [getattr(skimage.data, n)()[..., :3] for n in PHOTOS]


def upscale(digits: np.ndarray, px: int) -> np.ndarray:
    """(N, 8, 8) values 0..16 -> (N, px, px) uint8 0..255, bicubic."""
    out = np.empty((len(digits), px, px), dtype=np.uint8)
    for i, d in enumerate(digits):
        img = Image.fromarray((d * (255.0 / 16.0)).clip(0, 255).astype(np.uint8))
        out[i] = np.asarray(img.resize((px, px), Image.BICUBIC))
    return out


def blend(digit: np.ndarray, pool: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """|patch - digit| per channel: a (px, px) grey digit on a random (px, px, 3) crop of a random photo."""
    px = digit.shape[0]
    photo = pool[rng.integers(len(pool))]
    y, x = rng.integers(photo.shape[0] - px), rng.integers(photo.shape[1] - px)
    patch = photo[y:y + px, x:x + px].astype(np.int16)
    return np.abs(patch - digit[..., None].astype(np.int16)).astype(np.uint8)


def write_pair(root: Path, *, px: int = 32, val_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write the pair under root (once: a `done` marker skips it); returns root."""
    if (root / "done").is_file():
        return root
    from sklearn.datasets import load_digits

    d = load_digits()
    images, labels = upscale(d.images, px), d.target
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(labels))
    half = len(idx) // 2
    src, tgt = idx[:half], idx[half:]          # disjoint: the target's digits are unseen
    n_val = int(round(len(src) * val_fraction))
    pool = photos()
    parts = {("digits", "val"): src[:n_val], ("digits", "train"): src[n_val:],
             ("digits_m", "unlabelled"): tgt[: len(tgt) // 2], ("digits_m", "test"): tgt[len(tgt) // 2:]}
    for (domain, split), ids in parts.items():
        for i in ids:
            img = np.repeat(images[i][..., None], 3, axis=2) if domain == "digits" else blend(images[i], pool, rng)
            d_ = root / domain / split / ("" if split == "unlabelled" else str(labels[i]))
            d_.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d_ / f"d{i:04d}.png")
    (root / "done").write_text("ok\n")
    return root


if __name__ == "__main__":
    import sys

    print(write_pair(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/vt-digits-m")))
