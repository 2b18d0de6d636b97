"""Checkpoints: written atomically (temp file + rename), read with `weights_only=True`.

A checkpoint carries everything needed to rebuild the model and its preprocessing without the
config that trained it:

    {"format": "vision_transfer/1", "task", "model" (state dict), "model_spec": {backbone,
     out_indices, head, num_classes, options}, "classes", "preprocessing", "image_size",
     "epoch", "metrics", "best", "optimizer", "scheduler", "scaler", "rng", "config"}
"""
from __future__ import annotations

import errno
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
    """Write to a temporary beside `path`, fsync, rename. Temporaries of `path` that a killed
    writer left behind (kill -9 mid-write) are removed first: only one process writes a run's
    checkpoints (rank 0), so any such file is stale."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(path.name + ".*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:   # disk full: `path` still holds the previous file
            from .signals import disk_full

            raise disk_full(path, e) from None
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
        raise VTError(unreadable_checkpoint(path, e)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VTError(f"{path} is not a vision_transfer checkpoint (no '{FORMAT}' format tag); "
                      "for plain weights use model.weights=FILE")
    if task and ckpt["task"] != task:
        raise VTError(f"{path} is a {ckpt['task']} checkpoint, not {task}: use `vt ... {ckpt['task']}`")
    return ckpt


def unreadable_checkpoint(path: str | os.PathLike, e: BaseException) -> str:
    """The one-line reason a checkpoint does not load: refused code, a cut file, or another format."""
    text = str(e)
    if "Weights only load failed" in text or "Unsupported global" in text:
        what = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "a Python object")
        return (f"checkpoint {path} holds pickled Python objects that could run code ({what[:120]}); refused: only "
                "tensors and plain data are loaded. Re-save it from a trusted source as a state dict")
    if "central directory" in text or "failed finding" in text or isinstance(e, (EOFError, RuntimeError)):
        return (f"checkpoint {path} is damaged or truncated ({type(e).__name__}: {text.splitlines()[0][:100]}); "
                "use the previous one (checkpoints/best.pt) or rerun with train.resume=auto")
    return f"cannot read checkpoint {path}: {type(e).__name__}: {text.splitlines()[0][:160] if text else ''}"


def first_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) tensor names of `state` against `model`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, wrong


def build_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the task model of a checkpoint (architecture from model_spec, then its weights)."""
    from ..task import get_task

    if ckpt["task"] == "multitask":   # backbone + every head (vision_transfer/multitask)
        from ..multitask.checkpoint import rebuild

        return rebuild(ckpt)
    spec = ckpt["model_spec"]
    task = get_task(ckpt["task"])
    backbone = create_backbone(spec["backbone"], weights=None, out_indices=spec.get("out_indices"))
    backbone.weights = spec.get("weights")
    model = task.build_model(backbone=backbone, num_classes=spec["num_classes"], head=spec["head"],
                             **spec.get("options", {}))
    missing, unexpected, wrong = first_mismatch(model, ckpt["model"])   # FrozenBatchNorm2d has no num_batches_tracked
    if missing or unexpected or wrong:
        first = (wrong + missing + unexpected)[0]
        shape = f" {tuple(ckpt['model'][first].shape)} in the file, {tuple(model.state_dict()[first].shape)} in the " \
                "model" if first in wrong else ""
        raise VTError(f"checkpoint weights do not fit the rebuilt {ckpt['task']} model: {len(missing)} missing, "
                      f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors (first: {first}{shape}); "
                      "was it saved by another version or edited?")
    model.load_state_dict(ckpt["model"], strict=False)
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
