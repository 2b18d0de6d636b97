"""vision_transfer: transfer learning for vision — classification, detection and segmentation
on ImageNet-pretrained backbones.

    import vision_transfer as vt
    bb = vt.create_backbone("tf_efficientnet_lite0", weights="imagenet")
    run = vt.train("classification", overrides={"data.root": "cells", "transfer.strategy": "linear_probe"})
    vt.evaluate("classification", checkpoint=run.out_dir / "checkpoints/best.pt")

Names are imported lazily so that `vt` commands which need no torch start fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_backbone": "vision_transfer.backbones",
    "register_backbone": "vision_transfer.backbones",
    "Backbone": "vision_transfer.backbones",
    "StagedBackbone": "vision_transfer.backbones",
    "Preprocessing": "vision_transfer.backbones",
    "BACKBONES": "vision_transfer.backbones",
    "build_model": "vision_transfer.api",
    "train": "vision_transfer.api",
    "evaluate": "vision_transfer.api",
    "predict": "vision_transfer.api",
    "study": "vision_transfer.studies",
    "list_heads": "vision_transfer.heads",
    "load_model": "vision_transfer.engine.checkpoint",
    "register_head": "vision_transfer.heads",
    "get_task": "vision_transfer.task",
    "TASKS": "vision_transfer.task",
    "Task": "vision_transfer.task",
    "evaluate_coco": "vision_transfer.evaluation.coco",
    "embed": "vision_transfer.similarity",
    "SimilarityIndex": "vision_transfer.similarity",
    "VTError": "vision_transfer.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vision_transfer' has no attribute {name!r}")
