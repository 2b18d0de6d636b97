"""Run an exported `.onnx` with ONNX Runtime behind the PyTorch model's own call signature.

`load_onnx(path, task=...)` returns `(module, meta)` like `engine.checkpoint.load_model`, so
`vt predict` runs a task's own `predict` (same predictions.json, same drawings) on either:

- `io="batch"`: `module(x: (N, 3, S, S) normalised) -> logits` tensor;
- `io="per_image"`: `module(images: list[(3, H, W) in [0, 1]]) -> [{"boxes", "scores", "labels"}]`,
  one graph run per image.

ONNX Runtime is an optional extra: `pip install 'vision_transfer[onnx]'`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import VTError


def onnx_session(path: str | os.PathLike, *, threads: int | None = None):
    """An ONNX Runtime CPU session (all graph optimisations); `threads`: intra-op threads (None: torch's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise VTError("running .onnx files needs ONNX Runtime: pip install 'vision_transfer[onnx]'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise VTError(f"cannot load {path} with ONNX Runtime: {str(e).splitlines()[0][:160]}") from None


def read_sidecar(path: str | os.PathLike, *, task: str | None = None) -> dict:
    """The JSON `vt export` writes beside the model (`model.onnx.json`)."""
    from .exporter import SIDECAR_FORMAT, sidecar_path

    side = sidecar_path(path)
    if not Path(path).is_file():
        raise VTError(f"{path} does not exist")
    if not side.is_file():
        raise VTError(f"{side} is missing: an exported model needs the sidecar JSON vt export wrote beside it")
    meta = json.loads(side.read_text())
    if meta.get("format") != SIDECAR_FORMAT:
        raise VTError(f"{side} is not a vision_transfer export sidecar (no '{SIDECAR_FORMAT}' format tag)")
    if task and meta["task"] != task:
        raise VTError(f"{path} is an exported {meta['task']} model, not {task}: use `vt ... {meta['task']}`")
    return meta


class OnnxBatchModel(nn.Module):
    """`forward(x: (N, 3, S, S)) -> (N, ...)` through ONNX Runtime (CPU); torch tensors in and out."""

    def __init__(self, session, meta: dict) -> None:
        super().__init__()
        self.session, self.meta = session, meta
        self.input_name = meta["inputs"][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


class OnnxPerImageModel(nn.Module):
    """`forward(images: list[(3, H, W)]) -> [dict(output name -> tensor)]`, one graph run per image."""

    def __init__(self, session, meta: dict) -> None:
        super().__init__()
        self.session, self.meta = session, meta
        self.input_name = meta["inputs"][0]

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> list[dict[str, torch.Tensor]]:
        if targets is not None:
            raise VTError("an exported model only predicts; train from the checkpoint")
        results = []
        for im in images:
            outs = self.session.run(None, {self.input_name: im.detach().float().cpu().contiguous().numpy()})
            results.append({n: torch.from_numpy(o).to(im.device) for n, o in zip(self.meta["outputs"], outs)})
        return results


def load_onnx(path: str | os.PathLike, *, task: str | None = None, threads: int | None = None
              ) -> tuple[nn.Module, dict]:
    """`(module with the PyTorch model's call signature, meta)` for an exported `.onnx`."""
    meta = read_sidecar(path, task=task)
    if meta.get("export_format") != "onnx":
        raise VTError(f"{path}: the sidecar says {meta.get('export_format')}, not onnx")
    session = onnx_session(path, threads=threads)
    cls = OnnxPerImageModel if meta["io"] == "per_image" else OnnxBatchModel
    return cls(session, meta).eval(), meta
