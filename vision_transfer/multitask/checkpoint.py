"""A multitask checkpoint: rebuilt whole, or cut down to one head (backbone + that head) as an
ordinary single-task checkpoint, so that `vt eval` / `vt predict` / `vt export multitask --task NAME`
run the entry's task through that task's usual path.

    {"format", "task": "multitask", "model" (state dict: backbone.*, heads.NAME.* without the
     backbone's tensors, which every head shares, log_vars),
     "model_spec": {backbone, weights, out_indices, balance, aliases (heads.* key -> backbone.* key)},
     "entries": [{"name", "weight", "task", "classes", "image_size", "preprocessing", "config",
                  "model_spec"}, ...], "epoch", "metrics" (NAME/metric), ...}
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from ..errors import VTError


def no_head(task: str, head: str | None) -> None:
    """A one-line error when `--task NAME` (multitask.head) is given for a single-task checkpoint."""
    if head is not None:
        raise VTError(f"--task {head} (multitask.head) picks a head of a multitask checkpoint; a {task} "
                      "checkpoint has one head: drop it")


def head_of(head: str | None, overrides: list[str] | dict | None) -> tuple[str | None, list[str] | dict | None]:
    """`head`, else the key multitask.head of `overrides`; and the overrides without it."""
    if isinstance(overrides, dict):
        rest = {k: v for k, v in overrides.items() if k != "multitask.head"}
        return head or overrides.get("multitask.head"), rest
    rest = [o for o in overrides or [] if o.partition("=")[0].strip() != "multitask.head"]
    given = [o.partition("=")[2].strip() for o in overrides or [] if o not in rest]
    return head or (given[-1] if given else None), rest


def rebuild(ckpt: dict) -> nn.Module:
    """The `MultiTaskModel` of a checkpoint, with its weights."""
    from ..backbones import create_backbone
    from ..engine.checkpoint import first_mismatch
    from ..task import get_task
    from .task import MultiTaskModel

    spec = ckpt["model_spec"]
    backbone = create_backbone(spec["backbone"], weights=None, out_indices=spec.get("out_indices"))
    backbone.weights = spec.get("weights")
    heads, tasks, weights = {}, {}, {}
    for e in ckpt["entries"]:
        task = get_task(e["task"])
        s = e["model_spec"]
        heads[e["name"]] = task.build_model(backbone=backbone, num_classes=s["num_classes"], head=s["head"],
                                            **s.get("options", {}))
        tasks[e["name"]], weights[e["name"]] = task, e.get("weight", 1.0)
    model = MultiTaskModel(backbone, heads, tasks=tasks, weights=weights, balance=spec.get("balance", "fixed"))
    missing, unexpected, wrong = first_mismatch(model, ckpt["model"])
    if missing or unexpected or wrong:
        first = (wrong + missing + unexpected)[0]
        raise VTError(f"checkpoint weights do not fit the rebuilt multitask model: {len(missing)} missing, "
                      f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors (first: {first})")
    model.load_state_dict(ckpt["model"], strict=False)
    model.eval()
    return model


def head_names(ckpt: dict) -> list[str]:
    return [e["name"] for e in ckpt.get("entries", [])]


def pick_head(ckpt: dict, head: str | None, *, path: str | os.PathLike = "") -> dict:
    """The entry `head` of a multitask checkpoint (the only one when `head` is None)."""
    from ..errors import did_you_mean

    names = head_names(ckpt)
    if head is None:
        if len(names) == 1:
            head = names[0]
        else:
            raise VTError(f"{path} holds the heads {', '.join(names)}: name one with --task NAME "
                          "(or multitask.head=NAME)")
    for e in ckpt["entries"]:
        if e["name"] == head:
            return e
    raise VTError(f"{path} has no head {head!r}{did_you_mean(head, names)}; heads: {', '.join(names)}")


def head_checkpoint(ckpt: dict, head: str | None, *, path: str | os.PathLike = "") -> dict:
    """The single-task checkpoint of one head: backbone + that head, in its task's own format."""
    entry = pick_head(ckpt, head, path=path)
    prefix = f"heads.{entry['name']}."
    full = {**ckpt["model"], **{k: ckpt["model"][b] for k, b in ckpt["model_spec"].get("aliases", {}).items()
                                if b in ckpt["model"]}}   # the shared encoder is stored once, under backbone.*
    state = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
    metrics = {k.split("/", 1)[1]: v for k, v in (ckpt.get("metrics") or {}).items()
               if k.startswith(f"{entry['name']}/")}
    single = {k: v for k, v in entry.items() if k not in ("name", "weight")}
    return {**single, "model": state, "epoch": ckpt.get("epoch"), "metrics": metrics,
            "multitask": {"head": entry["name"], "source": str(path)}}


@contextmanager
def single_head_file(checkpoint: str | os.PathLike, head: str | None) -> Iterator[tuple[str, Path, str]]:
    """`(the head's task, a temporary single-task checkpoint file, the head's name)` for the usual
    eval / predict / export path."""
    from ..engine.checkpoint import read_checkpoint, save_atomic

    ckpt = read_checkpoint(checkpoint)
    if ckpt["task"] != "multitask":
        raise VTError(f"{checkpoint} is a {ckpt['task']} checkpoint, not multitask: use `vt ... {ckpt['task']}`")
    one = head_checkpoint(ckpt, head, path=checkpoint)
    with tempfile.TemporaryDirectory(prefix="vt-head-") as tmp:
        path = Path(tmp) / f"{one['multitask']['head']}.pt"
        save_atomic(one, path)
        yield one["task"], path, one["multitask"]["head"]


def default_eval_dir(checkpoint: str | os.PathLike, head: str) -> Path:
    return Path(checkpoint).resolve().parent.parent / f"eval-{head}"
