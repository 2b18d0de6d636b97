"""The cached linear probe: pooled features of every stage computed once, then either solved to
the optimum (`transfer.probe_solver=lbfgs`, see `solver.py`) or trained with the shared `fit`
(`sgd`: AdamW/SGD on the cached tensor, for heads that are not linear).

`transfer.probe_layers` picks the stages whose pooled maps the head reads: `last` (the deepest
map, the classic probe), `all`, a list of stage numbers (0 = the stem's stage, as in
`model.out_indices`), or `auto`: the candidate sets of `layer_candidates` are each solved and the
best on validation (or by cross-validation on train) wins — earlier stages often transfer better
to data far from ImageNet (Yosinski et al. 2014; Kornblith et al. 2019).

A solved run writes what `fit` writes (metrics.jsonl with one row, checkpoints/last.pt and
best.pt holding the whole model, the chosen stages in the checkpoint's model_spec) plus
`probe.json`: the validation score of every C and every stage set tried.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vision_transfer.backbones.stages import parse_stages
from vision_transfer.engine.checkpoint import save_atomic
from vision_transfer.engine.logging import RunLogger
from vision_transfer.engine.loop import FitResult, public_metrics
from vision_transfer.errors import VTError
from vision_transfer.files import write_json

from .features import stage_columns
from .metrics import classification_metrics
from .solver import ProbeFit, solve_probe

SOLVERS = ("auto", "lbfgs", "sgd")


def layer_sets(spec: Any, num_stages: int) -> list[list[int]]:
    """The stage sets `transfer.probe_layers` names: one set, or for `auto` the candidates."""
    if spec == "auto":
        return layer_candidates(num_stages)
    try:
        return [parse_stages(spec, num_stages, key="transfer.probe_layers")]
    except VTError as e:
        raise VTError(str(e).replace("give last, all or", "give last, all, auto or")) from None


def layer_candidates(num_stages: int) -> list[list[int]]:
    """What `auto` tries, the deepest map first (it wins ties): the deepest map; the deepest k
    stages concatenated for every k; and the two stages below the deepest alone."""
    last = num_stages - 1
    cands = [[last]] + [list(range(k, num_stages)) for k in range(last - 1, -1, -1)]
    cands += [[s] for s in range(last - 1, max(-1, last - 3), -1)]
    return cands


def is_linear(head: nn.Module) -> bool:
    """A head whose classifier is one Linear (after an optional Dropout): a convex probe."""
    layers = [m for m in getattr(head, "classifier", nn.Identity()).modules()
              if not isinstance(m, (nn.Sequential, nn.Dropout))]
    return len(layers) == 1 and isinstance(layers[0], nn.Linear)


def resolve_solver(solver: str, head: nn.Module, *, cached: bool) -> str:
    if solver not in SOLVERS:
        raise VTError(f"transfer.probe_solver={solver!r}; valid: {', '.join(SOLVERS)}")
    if solver == "auto":
        return "lbfgs" if cached and is_linear(head) else "sgd"
    if solver == "lbfgs" and not is_linear(head):
        raise VTError("transfer.probe_solver=lbfgs solves a linear head; this head is not one "
                      "(use probe_solver=sgd, or model.head=linear)")
    if solver == "lbfgs" and not cached:
        raise VTError("transfer.probe_solver=lbfgs solves on features computed once: drop "
                      "transfer.cache_features=false (or use probe_solver=sgd)")
    return solver


def choose(candidates: list[list[int]], channels: list[int], train: tuple, val: tuple | None, *,
           num_classes: int, C: float | None, select: str, label_smoothing: float) -> tuple[list[int], ProbeFit, list]:
    """Solve every candidate stage set; `(best stages, its fit, [(stages, fit), ...])`. The best:
    highest selection accuracy, then lower log-loss, then the earlier candidate. With several
    candidates they are ranked at scikit-learn's tolerance (1e-4) and the winner solved again at
    the full one: the ranking needs no tighter optimum (measured on digits, ELPV and shapes, 3 splits
    each: the same picks and test accuracies in 40-70% of the time)."""
    def solve(stages: list[int], tol: float) -> ProbeFit:
        cols = stage_columns(channels, stages)
        return solve_probe(train[0][:, cols], train[1], *((val[0][:, cols], val[1]) if val else (None, None)),
                           num_classes=num_classes, C=C, select=select, label_smoothing=label_smoothing, tol=tol)

    if len(candidates) == 1:
        fit = solve(candidates[0], 1e-6)
        return candidates[0], fit, [(candidates[0], fit)]
    tried = [(stages, solve(stages, 1e-4)) for stages in candidates]
    best = max(range(len(tried)), key=lambda i: (tried[i][1].best.get("accuracy", 0.0),
                                                  -tried[i][1].best.get("log_loss", 0.0), -i))
    stages = tried[best][0]
    fit = solve(stages, 1e-6)
    tried[best] = (stages, fit)
    return stages, fit, tried


def write_into(model: nn.Module, stages: list[int], fit: ProbeFit) -> None:
    """Give `model` a head on `stages` and copy the solution into its Linear."""
    last = len(model.backbone.stages) - 1
    if list(stages) != [last] or getattr(model.head, "takes_all_maps", False):
        model.use_stages(stages)
    linear = [m for m in model.head.classifier.modules() if isinstance(m, nn.Linear)][0]
    with torch.no_grad():
        linear.weight.copy_(fit.weight.to(linear.weight))
        linear.bias.copy_(fit.bias.to(linear.bias))


class SolvedProbe:
    """`TrainingPlan.solve`: solves the probe and writes the run folder as `fit` would."""

    def __init__(self, model: nn.Module, *, channels: list[int], train: tuple, val: tuple | None,
                 classes: list[str], candidates: list[list[int]], C: float | None, select: str,
                 label_smoothing: float) -> None:
        self.model, self.channels, self.train, self.val, self.classes = model, channels, train, val, classes
        self.candidates, self.C, self.select, self.label_smoothing = candidates, C, select, label_smoothing

    def __call__(self, *, out_dir: str | Path | None, checkpoint_meta: dict, is_main: bool = True,
                 tensorboard: bool = False) -> FitResult:
        t0 = time.perf_counter()
        stages, fit, tried = choose(self.candidates, self.channels, self.train, self.val,
                                    num_classes=len(self.classes), C=self.C, select=self.select,
                                    label_smoothing=self.label_smoothing)
        write_into(self.model, stages, fit)
        seconds = time.perf_counter() - t0
        last = len(self.model.backbone.stages) - 1
        if stages != [last]:   # rebuilt from the checkpoint with the same head
            checkpoint_meta["model_spec"]["options"]["probe_layers"] = stages
        row, metrics = self._row(stages, fit, seconds)
        if is_main and out_dir is not None:
            self._write(Path(out_dir), row, metrics, checkpoint_meta, tried, tensorboard)
        monitor_metrics = metrics or {"train_loss": row["train_loss"]}
        return FitResult(best_epoch=1, best_metrics=monitor_metrics, last_metrics=row, history=[row],
                         train_time_s=seconds)

    def _row(self, stages: list[int], fit: ProbeFit, seconds: float) -> tuple[dict, dict]:
        """The metrics.jsonl row and the validation metrics (empty without a val split)."""
        cols = stage_columns(self.channels, stages)
        x, y = self.train[0][:, cols], self.train[1]
        train_loss = float(F.cross_entropy(x @ fit.weight.float().T + fit.bias.float(), y))
        row = {"epoch": 1, "train_loss": train_loss, "solver": "lbfgs", "C": fit.C, "selection": fit.selection,
               "probe_layers": stages, "lbfgs_iterations": fit.iterations, "epoch_time_s": seconds,
               "images_per_s": len(y) / max(seconds, 1e-9)}
        val: dict = {}
        if self.val is not None:
            logits = self.val[0][:, cols] @ fit.weight.float().T + fit.bias.float()
            val = public_metrics(classification_metrics(logits, self.val[1], self.classes))
        return {**row, **val}, val

    def _write(self, out: Path, row: dict, metrics: dict, meta: dict, tried: list, tensorboard: bool) -> None:
        (out / "metrics.jsonl").unlink(missing_ok=True)   # a solved probe is one row, never resumed
        logger = RunLogger(out, tensorboard=tensorboard)
        monitor = "accuracy" if metrics else "train_loss"
        logger.log_epoch(row, monitor=monitor)
        logger.close()
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        ckpt = {**meta, "model": state, "epoch": 1, "metrics": metrics, "optimizer": None, "scheduler": None,
                "scaler": None, "best": {"value": row[monitor], "epoch": 1, "metrics": metrics or
                                         {"train_loss": row["train_loss"]}, "bad_epochs": 0, "monitor": monitor}}
        save_atomic(ckpt, out / "checkpoints" / "last.pt")
        save_atomic(ckpt, out / "checkpoints" / "best.pt")
        write_json(out / "probe.json", {
            "solver": "lbfgs", "probe_layers": row["probe_layers"], "C": row["C"], "selection": row["selection"],
            "fit_time_s": round(row["epoch_time_s"], 4),
            "tried": [{"probe_layers": s, "C": f.C, "selection": f.selection, **{k: f.best.get(k) for k in
                      ("accuracy", "log_loss")}, "scores": f.scores} for s, f in tried]})


__all__ = ["SOLVERS", "SolvedProbe", "choose", "is_linear", "layer_candidates", "layer_sets", "resolve_solver",
           "write_into"]
