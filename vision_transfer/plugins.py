"""The TASKS registry: every task the suite knows, torch-free so the CLI can list them fast.

The built-in plugins are registered lazily below (imported on first use); third-party tasks come
from the entry-point group `vision_transfer.tasks`, the convention pytest and others use:

    # pyproject.toml of my-vt-task
    [project.entry-points."vision_transfer.tasks"]
    my_task = "my_pkg.task:MyTask"      # a Task subclass or instance

after `pip install my-vt-task`, `vt train my_task`, `vt eval my_task`, `vt heads my_task` work.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from .errors import VTError
from .registry import Registry

ENTRY_POINT_GROUP = "vision_transfer.tasks"

TASKS: Registry[Any] = Registry("task")

# name -> "module:attribute" of the Task class; imported when the task is first asked for.
for _name in ("classification", "detection", "segmentation"):
    TASKS.add(_name, f"vision_transfer.tasks.{_name}:{_name.capitalize()}", source="builtin")
# several of the above on one shared backbone (`vt train multitask`): a task like the others for fit
TASKS.add("multitask", "vision_transfer.multitask.task:MultiTask", source="builtin")

_discovered = False


def discover() -> None:
    """Register the tasks that installed packages declare in the entry-point group (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in TASKS:
            TASKS.add(ep.name, ep.value, source=ep.dist.name if ep.dist else "entry point")


def task_names() -> list[str]:
    """Every task: built-in, registered in code and declared by installed packages."""
    discover()
    return TASKS.list()


def resolve(name: str) -> Any:
    """The registered object (a Task class or instance) of `name`, importing its module if lazy."""
    discover()
    obj = TASKS.get(name)
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            source = TASKS.meta(name).get("source", "user")
            raise VTError(f"task {name!r} ({source}) points at {module}:{attr}, which does not import ({e}); "
                          "reinstall the package that provides it") from None
        TASKS.add(name, obj, override=True, **TASKS.meta(name))
    return obj

