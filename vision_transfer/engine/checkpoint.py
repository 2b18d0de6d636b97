"""Checkpoints: written atomically (temp file + rename), read with `weights_only=True`.

A checkpoint carries everything needed to rebuild the model and its preprocessing without the
config that trained it:

    {"format": "vision_transfer/1", "task", "model" (state dict), "model_spec": {backbone,
     out_indices, head, num_classes, options}, "classes", "preprocessing", "image_size",
     "epoch", "metrics", "best", "optimizer", "scheduler", "scaler", "rng", "config"}
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones import create_backbone
from ..backbones.base import Backbone, Preprocessing
from ..errors import VTError

FORMAT = "vision_transfer/1"


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": _py_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _py_state() -> list:
    version, internal, gauss = random.getstate()
    return [int(version), torch.tensor(internal, dtype=torch.int64), gauss]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_checkpoint(path: str | os.PathLike, *, task: str | None = None) -> dict:
    """Load and check a vision_transfer checkpoint; `task` refuses a checkpoint of another task."""
    p = Path(path)
    if not p.is_file():
        raise VTError(f"checkpoint {path} does not exist (runs write OUT/checkpoints/best.pt and last.pt)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise VTError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VTError(f"{path} is not a vision_transfer checkpoint (no '{FORMAT}' format tag); "
                      "for plain weights use model.weights=FILE")
    if task and ckpt["task"] != task:
        raise VTError(f"{path} is a {ckpt['task']} checkpoint, not {task}: use `vt ... {ckpt['task']}`")
    return ckpt


def build_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the task model of a checkpoint (architecture from model_spec, then its weights)."""
    from ..task import get_task

    spec = ckpt["model_spec"]
    task = get_task(ckpt["task"])
    backbone = create_backbone(spec["backbone"], weights=None, out_indices=spec.get("out_indices"))
    backbone.weights = spec.get("weights")
    model = task.build_model(backbone=backbone, num_classes=spec["num_classes"], head=spec["head"],
                             **spec.get("options", {}))
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # FrozenBatchNorm2d has none
    if missing or unexpected:
        raise VTError(f"checkpoint weights do not fit the rebuilt {ckpt['task']} model "
                      f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing + unexpected)[0]})")
    model.eval()
    return model


def load_model(path: str | os.PathLike, *, task: str | None = None) -> tuple[nn.Module, dict]:
    """`(model in eval mode, checkpoint dict without optimizer state)`."""
    ckpt = read_checkpoint(path, task=task)
    model = build_from_checkpoint(ckpt)
    for k in ("optimizer", "scheduler", "scaler", "rng", "model"):
        ckpt.pop(k, None)
    return model, ckpt


def load_backbone_from_checkpoint(path: str | os.PathLike) -> tuple[Backbone, Preprocessing, int]:
    """The trained backbone of a checkpoint, its preprocessing and the image size it was trained at."""
    from ..task import find_backbone

    model, meta = load_model(path)
    return find_backbone(model), Preprocessing.from_dict(meta["preprocessing"]), int(meta["image_size"])
