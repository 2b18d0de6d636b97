"""`vt export`: a checkpoint -> an ONNX or TorchScript file, a sidecar JSON, and a parity check.

    export_checkpoint("classification", checkpoint="runs/x/checkpoints/best.pt", fmt="onnx",
                      out="model.onnx", dynamic=True)
    # writes model.onnx and model.onnx.json; returns {"parity": {"logits": 2.1e-06, ...}, ...}

The exported model runs on the same inputs as the PyTorch model (generated scenes at the export
size and, when dynamic, at another batch / image size); the largest absolute difference of each
output is printed and stored in the sidecar, and a difference above the tolerance is an error.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint import load_model
from ..errors import VTError
from ..files import atomic_path, write_json
from ..task import get_task
from .spec import ExportSpec, tensor_export_spec

from .cli import FORMATS
SIDECAR_FORMAT = "vision_transfer-export/1"
OPSET = 17


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """`model.onnx` -> `model.onnx.json` (ONNX and TorchScript files of one model can sit side by side)."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def export_spec_for(task_name: str, model: nn.Module, *, meta: dict, image_size: int, batch: int,
                    dynamic: bool) -> ExportSpec:
    """The task's `export_spec` when it defines one, else the tensor-in, tensor-out default."""
    task = get_task(task_name)
    build = getattr(task, "export_spec", None) or tensor_export_spec
    return build(model, meta=meta, image_size=image_size, batch=batch, dynamic=dynamic)


def export_checkpoint(task: str, *, checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike,
                      image_size: int | None = None, dynamic: bool = False, batch: int = 1,
                      head: str | None = None) -> dict[str, Any]:
    """Export, write the sidecar, check parity; returns the sidecar's content. `multitask`: the
    backbone with the head `head`, exported as its own task's model."""
    if task == "multitask":
        from ..multitask.checkpoint import single_head_file

        with single_head_file(checkpoint, head) as (sub, path, name):
            side = export_checkpoint(sub, checkpoint=path, fmt=fmt, out=out, image_size=image_size, dynamic=dynamic,
                                     batch=batch)
        side.update(source_checkpoint=str(checkpoint), multitask_head=name)
        write_json(sidecar_path(out), side)
        return side
    from ..multitask.checkpoint import no_head

    no_head(task, head)
    if fmt not in FORMATS:
        raise VTError(f"--format {fmt!r} is not supported; valid: {', '.join(FORMATS)}")
    if batch < 1:
        raise VTError(f"--batch-size {batch}: give 1 or more")
    model, meta = load_model(checkpoint, task=task)
    size = int(image_size or meta["image_size"])
    spec = export_spec_for(task, model, meta=meta, image_size=size, batch=batch, dynamic=dynamic)
    out = Path(out)
    start = time.perf_counter()
    with warnings.catch_warnings():   # tracer warnings name library lines, not anything the user can act on
        warnings.simplefilter("ignore")
        run_exported = _export_onnx(spec, out) if fmt == "onnx" else _export_torchscript(spec, out)
    parity = check_parity(spec, run_exported)
    side = {"format": SIDECAR_FORMAT, "task": task, "export_format": fmt, "file": out.name,
            "classes": list(meta["classes"]), "image_size": size, "preprocessing": meta["preprocessing"],
            "io": spec.io, "inputs": spec.input_names, "outputs": spec.output_names, "dynamic": dynamic,
            "batch": batch, "opset": OPSET if fmt == "onnx" else None, "parity": parity,
            "tolerance": spec.tolerance, "source_checkpoint": str(checkpoint), "model_spec": meta.get("model_spec"),
            "config": {"data": (meta.get("config") or {}).get("data", {})},
            "export_time_s": round(time.perf_counter() - start, 2), **spec.extra_meta}
    write_json(sidecar_path(out), side)
    return side


def _export_onnx(spec: ExportSpec, out: Path):
    with atomic_path(out) as tmp:
        torch.onnx.export(spec.module, spec.inputs, str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes or None, do_constant_folding=True)
    from .runtime import onnx_session

    session = onnx_session(out)
    return lambda *xs: [torch.from_numpy(o) for o in session.run(
        None, {n: x.numpy() for n, x in zip(spec.input_names, xs)})]


def _export_torchscript(spec: ExportSpec, out: Path):
    with torch.no_grad():
        traced = torch.jit.trace(spec.module, spec.inputs, check_trace=False, strict=False)
    with atomic_path(out) as tmp:
        torch.jit.save(traced, str(tmp))
    loaded = torch.jit.load(str(out), map_location="cpu")

    def run(*xs):
        with torch.no_grad():
            o = loaded(*xs)
        return list(o) if isinstance(o, (tuple, list)) else [o]
    return run


def check_parity(spec: ExportSpec, run_exported) -> dict[str, float]:
    """Largest |exported - PyTorch| per output over all parity inputs; VTError above tolerance."""
    worst: dict[str, float] = {n: 0.0 for n in spec.output_names}
    for inputs in [spec.inputs, *spec.other_inputs]:
        with torch.inference_mode():
            ref = spec.module(*inputs)
        ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
        got = run_exported(*inputs)
        diffs = (spec.compare or _elementwise)(ref, got, spec.output_names)
        for name, d in diffs.items():
            worst[name] = max(worst[name], d)
    bad = {n: d for n, d in worst.items() if d > spec.tolerance.get(n, 1e-4)}
    if bad:
        raise VTError("export parity failed: largest differences " + ", ".join(
            f"{n} {d:.3g} (tolerance {spec.tolerance.get(n, 1e-4):g})" for n, d in bad.items()))
    return worst


def _elementwise(ref: list[torch.Tensor], got: list[torch.Tensor], names: list[str]) -> dict[str, float]:
    out = {}
    for name, r, g in zip(names, ref, got):
        if tuple(r.shape) != tuple(g.shape):
            raise VTError(f"export parity failed: output {name!r} has shape {tuple(g.shape)} exported but "
                          f"{tuple(r.shape)} in PyTorch")
        out[name] = float((r.double() - g.double()).abs().max()) if r.numel() else 0.0
    return out
