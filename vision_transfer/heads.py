"""`register_head(task, name)`: one decorator to add a head to any task's head registry
(`Task.heads`, the registry `model.head=NAME` looks up).

    @vt.register_head("classification", "cosine")
    def cosine_head(*, in_channels: int, num_classes: int, **_) -> nn.Module: ...

then `model.head=cosine` on the command line, or `build_model(..., head="cosine")`. The builder
contract of each task's heads is in that task's docstring (and `vt heads TASK`):
- classification: `f(*, in_channels, num_classes, dropout, hidden_dim, **_) -> nn.Module`
  mapping the deepest map `(N, C, H, W)` to logits `(N, num_classes)`;
- detection: `f(spec: DetectorInputs) -> nn.Module` (a torchvision-style detector: images and
  targets in, a loss dict in training, `[{"boxes", "scores", "labels"}]` in eval);
- segmentation: `f(*, feature_info, num_classes, **options) -> nn.Module` mapping the list of
  feature maps (shallow to deep) to logits `(N, num_classes, H / s, W / s)`.
"""
from __future__ import annotations

from .registry import Registry


def head_registry(task: str) -> Registry:
    """The head registry of `task` (an unknown task is a one-line error listing the tasks)."""
    from .task import get_task

    return get_task(task).heads


def register_head(task: str, name: str | None = None, *, override: bool = False, **meta):
    """Decorator registering a head builder for `task` under `name`."""
    return head_registry(task).register(name, override=override, **meta)


def list_heads(task: str | None = None) -> dict[str, list[dict]]:
    """{task: [{"name", "default", "doc"}]} for one task or every task."""
    from .plugins import task_names
    from .task import get_task

    out = {}
    for name in [task] if task else task_names():
        t = get_task(name)
        out[name] = [{"name": h, "default": h == t.default_head,
                      "doc": ((getattr(t.heads.get(h), "__doc__", None) or "").strip().splitlines() or [""])[0]}
                     for h in t.heads.list()]
    return out


def print_heads(task: str | None = None, *, as_json: bool = False) -> int:
    """`vt heads [TASK]`: a table (or JSON) of every task's registered heads, the default marked."""
    from .tables import print_listing

    data = list_heads(task)
    rows = [(name, h["name"], "yes" if h["default"] else "", h["doc"]) for name, heads in data.items() for h in heads]
    return print_listing(data, rows=rows, columns=("task", "head", "default", "what it is"),
                         title="heads (model.head=NAME; vt.register_head(task, name) adds one)", as_json=as_json)
