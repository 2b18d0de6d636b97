"""Image embeddings: the deepest feature map of a backbone, global-average pooled, L2-normalised.

>>> model = load_embedding_model(backbone="tf_efficientnet_lite0", weights="imagenet", image_size=96)
>>> vectors, kept = embed(["a.png", "b.png"], model=model)      # (2, 320) float32, unit rows

`layers` (`vt embed --layers all` or `2,3,4`) embeds the pooled maps of several stages instead:
each stage's pooled vector is L2-normalised, then they are concatenated and scaled by
1/sqrt(#stages), so every stage weighs the same in a cosine score whatever its width, and the
result is still a unit vector (no dataset statistics needed, so a query embeds like the index).

A model's *identity* (backbone, weights, preprocessing, image size — and the weights file's or
checkpoint's SHA-256 where there is one) is stored with every index, so that vectors from two
different models are never compared.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone, Preprocessing, create_backbone
from ..data.image import BadImage, read_image
from ..errors import VTError
from .identity import describe_identity, make_identity, same_identity

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
DEFAULT_WEIGHTS = "imagenet"


@dataclass
class EmbeddingModel:
    """A backbone returning only its deepest map, with the preprocessing and size it embeds at."""

    backbone: Backbone
    preprocessing: Preprocessing
    image_size: int
    identity: dict
    device: torch.device
    layers: tuple[int, ...] | None = None   # stages pooled and concatenated (None: the deepest map)

    @property
    def dim(self) -> int:
        info = self.backbone.stage_info
        return sum(info[s].channels for s in self.layers) if self.layers else self.backbone.num_features

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """`(N, 3, S, S)` normalised images -> `(N, D)` float32 unit vectors (on the CPU)."""
        x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        maps = self.backbone(x)
        if not self.layers:
            return torch.nn.functional.normalize(maps[-1].float().mean(dim=(2, 3)), dim=1).cpu()
        parts = [torch.nn.functional.normalize(m.float().mean(dim=(2, 3)), dim=1) for m in maps]
        return (torch.cat(parts, 1) / len(parts) ** 0.5).cpu()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    from ..engine.device import resolve_device as resolve

    return resolve(device, option="--device")


def _file_sha256(path: str | None) -> str | None:
    if path and os.path.isfile(path):
        from ..weights import sha256_file

        return sha256_file(path)
    return None


def load_embedding_model(*, backbone: str | Backbone | None = None, weights: str | None = DEFAULT_WEIGHTS,
                         checkpoint: str | os.PathLike | None = None, image_size: int | None = None,
                         device: str | torch.device = "auto", layers=None) -> EmbeddingModel:
    """Build the embedding model from a registry name + weights, or from a `vt train` checkpoint;
    `layers`: None / `last`, `all`, or stage numbers (see the module docstring)."""
    if checkpoint is not None and backbone is not None:
        raise VTError("give either --checkpoint or --backbone/--weights, not both")
    dev = resolve_device(device)
    if checkpoint is not None:
        bb, pre, trained_size, ident = _from_checkpoint(Path(checkpoint))
        size = int(image_size or trained_size)
        ident = make_identity(preprocessing=pre, image_size=size, **ident)
    else:
        bb = create_backbone(backbone or DEFAULT_BACKBONE, weights=weights, out_indices=(-1,))
        pre = bb.preprocessing
        size = int(image_size or pre.input_size)
        w = None if bb.weights in (None, "none") else str(bb.weights)
        ident = make_identity(backbone=bb.name, weights=w, preprocessing=pre, image_size=size,
                              weights_sha256=_file_sha256(w))
    if size < 16:
        raise VTError(f"--image-size {size} is too small; use 32 or more")
    stages = _stages(bb, layers)
    if stages:
        bb.out_indices = tuple(stages)
        ident["layers"] = list(stages)
    bb = bb.eval().to(dev).to(memory_format=torch.channels_last)
    return EmbeddingModel(backbone=bb, preprocessing=pre, image_size=size, identity=ident, device=dev,
                          layers=tuple(stages) if stages else None)


def _stages(bb: Backbone, layers) -> list[int] | None:
    """Stage numbers to pool, or None for the deepest map alone (the classic embedding)."""
    from ..backbones.stages import parse_stages

    if layers in (None, "last"):
        return None
    stages = parse_stages(layers, len(bb.stage_info), key="--layers")
    return None if stages == [len(bb.stage_info) - 1] else stages


def _from_checkpoint(path: Path) -> tuple[Backbone, Preprocessing, int, dict]:
    if not path.is_file():
        raise VTError(f"checkpoint {path} not found; pass a file written by vt train (checkpoints/best.pt)")
    try:
        from ..engine.checkpoint import load_backbone_from_checkpoint
    except ImportError:
        raise VTError("--checkpoint needs vision_transfer.engine.checkpoint, which this install lacks") from None
    bb, pre, size = load_backbone_from_checkpoint(path)
    if tuple(bb.out_indices) != (len(bb.stage_info) - 1,):  # embeddings use the deepest map only
        bb.out_indices = (len(bb.stage_info) - 1,)
    ident = {"backbone": bb.name, "weights": f"checkpoint:{path.name}",
             "weights_sha256": _file_sha256(str(path)), "checkpoint": str(path)}
    return bb, pre, int(size), ident


def model_from_identity(ident: dict, *, device: str | torch.device = "auto") -> EmbeddingModel:
    """Rebuild the model an index was made with (to embed queries); refuses a changed file."""
    if ident.get("checkpoint"):
        model = load_embedding_model(checkpoint=ident["checkpoint"], image_size=ident["image_size"], device=device,
                                     layers=ident.get("layers"))
    else:
        model = load_embedding_model(backbone=ident["backbone"], weights=ident.get("weights") or "none",
                                     image_size=ident["image_size"], device=device, layers=ident.get("layers"))
    if not same_identity(model.identity, ident):
        raise VTError(f"the model of this index ({describe_identity(ident)}) cannot be rebuilt as it was: "
                      "its weights file or preprocessing changed; re-embed the images with vt embed")
    return model


def _batches(paths: Sequence[Path], model: EmbeddingModel, batch_size: int,
             skipped: list[tuple[str, str]]) -> Iterator[tuple[torch.Tensor, list[Path]]]:
    from ..data.transforms import embedding_transforms

    tf = embedding_transforms(image_size=model.image_size, preprocessing=model.preprocessing)
    images, kept = [], []
    for p in paths:
        try:
            images.append(tf(image=read_image(p))["image"])
            kept.append(p)
        except BadImage as e:
            skipped.append((str(p), str(e)))
        if len(images) == batch_size:
            yield torch.stack(images), kept
            images, kept = [], []
    if images:
        yield torch.stack(images), kept


def embed(paths: Sequence[str | os.PathLike], *, backbone: str | Backbone | None = None,
          weights: str | None = DEFAULT_WEIGHTS, checkpoint: str | os.PathLike | None = None,
          image_size: int | None = None, batch_size: int = 32, device: str | torch.device = "auto",
          model: EmbeddingModel | None = None, progress: bool = True,
          skipped: list[tuple[str, str]] | None = None, layers=None) -> tuple[np.ndarray, list[Path]]:
    """Embed image files: returns `(vectors (N, D) float32 with unit rows, kept_paths)`.

    Unreadable images are skipped; pass a list as `skipped` to receive `(path, reason)` pairs.
    `model` (from `load_embedding_model`) overrides backbone/weights/checkpoint/image_size."""
    if batch_size < 1:
        raise VTError(f"batch size must be at least 1, got {batch_size}")
    model = model or load_embedding_model(backbone=backbone, weights=weights, checkpoint=checkpoint,
                                          image_size=image_size, device=device, layers=layers)
    paths = [Path(p) for p in paths]
    skipped = skipped if skipped is not None else []
    chunks, kept = [], []
    with _progress(progress, len(paths)) as advance:
        for batch, batch_paths in _batches(paths, model, batch_size, skipped):
            chunks.append(model(batch).numpy())
            kept.extend(batch_paths)
            advance(len(batch_paths))
    dim = model.dim
    vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
    return vectors, kept


class _progress:
    """A rich progress bar (or nothing) as a context manager yielding `advance(n)`."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.bar = enabled and total > 0, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            transient=True, console=Console(stderr=True))  # stdout stays for results
        self.bar.__enter__()
        task = self.bar.add_task("embed", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
