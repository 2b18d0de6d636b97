"""`register_head(task, name)`: one decorator to add a head to any task's head registry.

    @vt.register_head("classification", "cosine")
    def cosine_head(*, in_channels: int, num_classes: int, **_) -> nn.Module: ...

then `model.head=cosine` on the command line, or `build_model(..., head="cosine")`.
"""
from __future__ import annotations

import importlib

from .errors import VTError

_HEAD_REGISTRIES = {
    "classification": "vision_transfer.tasks.classification.heads:HEADS",
    "detection": "vision_transfer.tasks.detection:HEADS",
    "segmentation": "vision_transfer.tasks.segmentation:HEADS",
}


def head_registry(task: str):
    if task not in _HEAD_REGISTRIES:
        raise VTError(f"unknown task {task!r}; valid: {', '.join(_HEAD_REGISTRIES)}")
    module, attr = _HEAD_REGISTRIES[task].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise VTError(f"the {task} plugin has no head registry") from None


def register_head(task: str, name: str | None = None, *, override: bool = False):
    """Decorator registering a head builder for `task` under `name`."""
    return head_registry(task).register(name, override=override)
