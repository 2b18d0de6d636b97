"""Multi-task training on one backbone: `vt train multitask -c recipe.yaml` (see run.py), one head
per entry run by `vt eval` / `vt predict` / `vt export multitask --task NAME` (checkpoint.py)."""
from .task import MultiTask, MultiTaskModel

__all__ = ["MultiTask", "MultiTaskModel"]
