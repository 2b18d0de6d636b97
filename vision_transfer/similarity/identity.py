"""The identity of an embedding model, stored with every index: vectors of two models never meet.

`{"backbone", "weights", "weights_sha256", "preprocessing": {mean, std, input_size, crop_pct,
interpolation}, "image_size"}` (+ `"layers"`: the stages pooled, absent for the deepest map alone;
+ `"checkpoint"`: where a checkpoint's model came from, not compared).
"""
from __future__ import annotations

from pathlib import Path

IDENTITY_KEYS = ("backbone", "weights", "weights_sha256", "preprocessing", "image_size", "layers")


def make_identity(*, backbone: str, weights: str | None, preprocessing, image_size: int,
                  weights_sha256: str | None = None, checkpoint: str | None = None) -> dict:
    """The JSON-able identity of an embedding model; `same_identity` compares the IDENTITY_KEYS."""
    ident = {"backbone": backbone, "weights": weights, "weights_sha256": weights_sha256,
             "preprocessing": preprocessing.to_dict(), "image_size": int(image_size)}
    if checkpoint:
        ident["checkpoint"] = str(Path(checkpoint).resolve())
    return ident


def _norm(ident: dict) -> dict:
    out = {k: ident.get(k) for k in IDENTITY_KEYS}
    pre = out["preprocessing"] or {}
    out["preprocessing"] = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in pre.items()}
    return out


def same_identity(a: dict, b: dict) -> bool:
    return _norm(a) == _norm(b)


def describe_identity(ident: dict) -> str:
    return f"{ident.get('backbone')} weights={ident.get('weights')} @ {ident.get('image_size')} px"
