"""`vt study TASK` and `vt.study(TASK, ...)`: how much labelled data does a task need, and which
way of transferring?

For each strategy x samples per class x seed the train split is subsampled (stratified, seeded
with the cell's seed: `data.max_per_class`), a model is trained with the same budget (the config's
`train.*`), and the task's monitor (accuracy / AP / mIoU) after the *last* epoch on the full
validation split is one row. (The last epoch, not the best: choosing the epoch on the data that
scores it would flatter the small-data cells most.)

    OUT/rows.jsonl      one row per finished cell, appended as cells finish: a rerun skips them
    OUT/runs/<strategy>/spc<k>/seed<s>/   each cell's run folder (resumed from last.pt if cut)
    OUT/study.json      {"rows": [...], "summary": [{strategy, samples_per_class, mean, ci95_low, ci95_high, n}]}
    OUT/study.md        the table; OUT/study.png the learning curves (log axis), with 95 % t-bands
    OUT/study_layers.png  with study.freeze_layers: the "which layers transfer" curve

    OUT/study_probe_layers.png  with study.probe_layers: linear probes on each stage set

Strategies: the four of `transfer.strategy`, and `scratch` = `finetune` with `model.weights=none`.
The `study.probe_layers=[0, 1, 2, 3, 4, all]` axis probes the pooled maps of each stage (or set:
`[2, 3]`, `all`, `auto`): which layers' features transfer, without fine-tuning anything.
Linear probes in a study choose their L2 strength by cross-validation on the cell's train images
(`transfer.probe_select=cv` unless set): like the fine-tunes, they never choose on the split that scores them.
The `study.freeze_layers=[0, 1, ...]` axis fine-tunes pretrained weights with the first k stages
frozen (Yosinski et al. 2014, "How transferable are features in deep neural networks?").
The `study.weights=[imagenet, none, runs/pretrain/backbone.safetensors]` axis runs every strategy (but
scratch) once per starting point: "does in-domain pretraining help, and at how many labels?".
Probes on the same images reuse the classification feature cache (keyed by the image list).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .api import resolve_config, train_from_config
from .config import STRATEGIES, Config, build_config
from .engine.logging import console
from .errors import VTError, did_you_mean
from .task import get_task

STUDY_STRATEGIES = (*STRATEGIES, "scratch")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid. `axis`: "strategy" or "freeze_layers"."""

    axis: str
    strategy: str
    samples_per_class: int
    seed: int
    freeze_layers: int | None = None
    backbone: str | None = None     # study.backbones: a rank candidate, NAME or NAME@WEIGHTS
    probe_layers: str | None = None    # axis "probe_layers": last | all | auto | "2" | "2,3"
    adapt: str | None = None     # the study.adapt axis: adapt.method of this cell
    weights: str | None = None      # the study.weights axis: model.weights of this cell

    @property
    def key(self) -> str:
        key = f"{self.axis}|{self.strategy}|{self.samples_per_class}|{self.seed}|{self.freeze_layers}"
        key = f"{key}|{self.backbone}" if self.backbone else key
        key = key if self.probe_layers is None else f"{key}|{self.probe_layers}"
        key = key if self.weights is None else f"{key}|{self.weights}"
        return key + (f"|{self.adapt}" if self.adapt is not None else "")

    @property
    def folder(self) -> str:
        head = {"strategy": self.strategy, "freeze_layers": f"freeze{self.freeze_layers}"}.get(
            self.axis, f"layers{str(self.probe_layers).replace(',', '_')}")
        head = f"adapt-{self.adapt}" if self.adapt is not None else head
        if self.weights is not None:
            digest = hashlib.sha256(self.weights.encode()).hexdigest()[:8]
            head = f"{head}-{self.weights if self.weights.isalnum() else 'file' + digest}"
        if self.backbone:
            head = f"{self.backbone.replace('@', '-').replace('/', '_').replace(':', '_')}/{head}"
        return f"{head}/spc{self.samples_per_class}/seed{self.seed}"

    @property
    def label(self) -> str:
        """The strategy as tables and plots name it: with the backbone (study.backbones) and the
        weights (study.weights) when those axes are on: one line per pair."""
        name = f"{self.strategy} {self.backbone}" if self.backbone else self.strategy
        if self.weights is None:
            return name
        w = self.weights if "/" not in self.weights and os.sep not in self.weights else \
            "/".join(Path(self.weights).parts[-2:])
        return f"{name} ({w})"


@dataclass
class StudyResult:
    out_dir: Path
    rows: list[dict]
    summary: list[dict]


def study_grid(cfg: Config) -> list[Cell]:
    """Every cell of the study `cfg.study` describes, validated; strategies in the given order."""
    s = cfg.study
    for name in s.strategies:
        if name not in STUDY_STRATEGIES:
            raise VTError(f"study.strategies: unknown strategy {name!r}{did_you_mean(name, STUDY_STRATEGIES)}; "
                          f"valid: {', '.join(STUDY_STRATEGIES)}")
    if not s.samples_per_class or any(k < 1 for k in s.samples_per_class):
        raise VTError(f"study.samples_per_class must be a list of positive counts, got {s.samples_per_class}")
    if len(set(s.strategies)) != len(s.strategies) or len(set(s.samples_per_class)) != len(s.samples_per_class):
        raise VTError("study.strategies and study.samples_per_class must not repeat a value")
    seeds = [cfg.train.seed + i for i in range(s.seeds)]
    from .weights import parse_weights

    for w in s.weights or []:
        parse_weights(w)   # a missing file fails here, not after hours of other cells
    weights = s.weights or [None]
    backbones = s.backbones or [None]   # study.backbones: the strategy axis once per backbone
    cells = [Cell("strategy", name, k, seed, backbone=b, weights=None if name == "scratch" else w)
             for b in backbones for name in s.strategies for w in (weights if name != "scratch" else [None])
             for k in s.samples_per_class for seed in seeds]
    for layers in s.freeze_layers or []:
        if layers < 0:
            raise VTError(f"study.freeze_layers holds {layers}; give stage counts 0, 1, 2, ...")
        cells += [Cell("freeze_layers", "finetune", k, seed, layers) for k in s.samples_per_class for seed in seeds]
    for spec in s.probe_layers or []:
        label = ",".join(str(i) for i in spec) if isinstance(spec, list) else str(spec)
        cells += [Cell("probe_layers", "linear_probe", k, seed, probe_layers=label)
                  for k in s.samples_per_class for seed in seeds]
    cells += _adapt_cells(cfg, seeds)
    if not cells:
        raise VTError("the study is empty: give study.strategies (e.g. [linear_probe, scratch]) or study.freeze_layers")
    return cells


def _adapt_cells(cfg: Config, seeds: list[int]) -> list[Cell]:
    """The study.adapt axis: one fine-tune per method (source-only is `none`), scored on
    adapt.target.val; rows are labelled `adapt=<method>` beside the strategies."""
    from .config import ADAPT_METHODS

    methods = cfg.study.adapt or []
    for m in methods:
        if m not in ADAPT_METHODS:
            raise VTError(f"study.adapt: unknown method {m!r}{did_you_mean(m, ADAPT_METHODS)}")
    if methods and cfg.adapt.target.val is None:
        raise VTError("study.adapt compares methods on labelled target data: give adapt.target.val "
                      "(and adapt.target.images for every method but none)")
    return [Cell("strategy", f"adapt={m}", k, seed, adapt=m) for m in methods
            for k in cfg.study.samples_per_class for seed in seeds]


def cell_config(cfg: Config, cell: Cell, out_dir: Path) -> Config:
    """The training config of one cell: the study's config with the cell's data size, seed,
    strategy, weights and run folder."""
    tree = cfg.model_dump(mode="json")
    tree.pop("task")
    tree["data"]["max_per_class"] = cell.samples_per_class
    tree["train"]["seed"] = cell.seed
    tree["train"]["resume"] = "auto"            # a cell cut short continues from its last epoch
    tree["run"] = {**tree["run"], "out_dir": str(out_dir / "runs" / cell.folder), "tensorboard": False}
    t = tree["transfer"]
    if cell.adapt is not None:   # adaptation trains the backbone: a probe would freeze what it aligns
        t["strategy"] = "finetune" if t["strategy"] == "linear_probe" else t["strategy"]
        tree["adapt"]["method"] = cell.adapt
    elif cell.strategy == "scratch":   # random weights: nothing worth freezing
        t["strategy"], t["freeze_layers"], tree["model"]["weights"] = "finetune", 0, None
    else:
        t["strategy"] = cell.strategy
    if cell.freeze_layers is not None:
        t["freeze_layers"] = cell.freeze_layers
    if cell.backbone:
        from .ranking.rank import parse_candidate

        name, weights = parse_candidate(cell.backbone)
        tree["model"]["backbone"] = name
        tree["model"]["weights"] = None if cell.strategy == "scratch" else weights
    if cell.strategy != "linear_probe":   # probe stages mean nothing to a fine-tune
        t["probe_layers"] = "last"
    if cell.probe_layers is not None:
        p = cell.probe_layers
        t["probe_layers"] = p if p in ("last", "all", "auto") else [int(i) for i in p.split(",")]
    if t.get("probe_select") == "auto":   # never choose C on the split that scores the cell
        t["probe_select"] = "cv"
    if cell.weights is not None:
        tree["model"]["weights"] = cell.weights
    return build_config(cfg.task, tree)


def _fingerprint(cfg: Config) -> str:
    """What must not change between a study and its resumption (the grid itself may grow)."""
    tree = cfg.model_dump(mode="json")
    tree.pop("study")
    tree.pop("run")
    tree["train"].pop("device", None)
    tree["data"].pop("num_workers", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def read_rows(path: Path, fingerprint: str) -> list[dict]:
    """Finished rows of an earlier (interrupted) run of the same study; a torn last line is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    other = {r.get("fingerprint") for r in rows} - {fingerprint}
    if other:
        raise VTError(f"{path} holds a study with other settings (data, model, transfer or train keys differ); "
                      "give another run.out_dir, or delete that file to start over")
    return rows


def _append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_cell(cfg: Config, cell: Cell, out_dir: Path, *, monitor: str) -> dict:
    """Train one cell; its row: the monitor after the last epoch on the full val split."""
    run_cfg = cell_config(cfg, cell, out_dir)
    t0 = time.perf_counter()
    result = train_from_config(run_cfg)
    wall = time.perf_counter() - t0
    history = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    summary = json.loads((result.out_dir / "summary.json").read_text())
    if monitor not in history[-1]:
        raise VTError(f"study: the run in {result.out_dir} has no {monitor!r}: the study needs validation data "
                      "(data.val.* or data.root with val/, or data.val_split > 0)")
    _check_subsampled(cfg.task, summary, cell)
    if cell.adapt is not None:    # adaptation cells score on the labelled target split
        monitor = f"target_{monitor}"
        if cell.adapt == "adabn":   # applied to best.pt after training: its target numbers are in the summary
            history[-1][monitor] = summary["target_metrics"][monitor[len("target_"):]]
    return {**asdict(cell), "strategy": cell.label, "metric": monitor, "value": float(history[-1][monitor]),
            "best_value": float(result.metrics.get(monitor, history[-1][monitor])),
            "train_time_s": round(wall, 3), "num_train": summary["num_train"], "run_dir": str(result.out_dir)}


def _check_subsampled(task: str, summary: dict, cell: Cell) -> None:
    limit = cell.samples_per_class * len(summary["classes"])
    if summary["num_train"] > limit:
        raise VTError(f"study: the {task} run trained on {summary['num_train']} images, more than "
                      f"{cell.samples_per_class} per class x {len(summary['classes'])} classes: the {task} plugin "
                      "does not apply data.max_per_class yet (it should call "
                      "vision_transfer.engine.subsample.subsample_train on its train split)")


def study(task: str, *, config: Config | dict | str | os.PathLike | None = None,
          overrides: dict | list[str] | None = None) -> StudyResult:
    """Python mirror of `vt study TASK [-c CONFIG] [key=value ...]`:

        res = vt.study("classification", overrides={"data.root": "cells", "study.seeds": 3,
                                                    "study.samples_per_class": [5, 20]})
        res.summary   # [{strategy, samples_per_class, mean, ci95_low, ci95_high, n}]"""
    return study_from_config(resolve_config(task, config, overrides))


def study_from_config(cfg: Config) -> StudyResult:
    """Run (or resume) the whole grid; write study.json, study.md and study.png. `multitask`: its
    first entry alone vs the whole recipe per budget and seed (vision_transfer/multitask/study.py)."""
    if cfg.task == "multitask":
        from .multitask.study import multitask_study

        return multitask_study(cfg)
    from .study_report import write_study  # matplotlib: only when the grid has run

    cells = study_grid(cfg)
    monitor = get_task(cfg.task).configured(cfg).monitor
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else Path("runs") / f"study-{cfg.task}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(cfg)
    rows_path = out_dir / "rows.jsonl"
    done = {r["key"]: r for r in read_rows(rows_path, fingerprint)}
    todo = [c for c in cells if c.key not in done]
    if done:
        console.print(f"[dim]study: {len(cells) - len(todo)} of {len(cells)} cells already in {rows_path}[/dim]")
    cols = [TextColumn("[bold]study[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn()]
    with Progress(*cols, console=console) as bar:
        tid = bar.add_task("", total=len(cells), completed=len(cells) - len(todo))
        for cell in todo:
            label = {"strategy": cell.label, "freeze_layers": f"freeze {cell.freeze_layers}"}.get(
                cell.axis, f"probe layers {cell.probe_layers}")
            bar.update(tid, description=f"{label}, {cell.samples_per_class}/class, seed {cell.seed}")
            row = {"key": cell.key, "fingerprint": fingerprint, **run_cell(cfg, cell, out_dir, monitor=monitor)}
            _append_row(rows_path, row)
            done[cell.key] = row
            bar.advance(tid)
    rows = [_public(done[c.key]) for c in cells]
    summary = write_study(out_dir, rows, task=cfg.task, monitor=monitor)
    console.print(f"[bold]study done[/bold]: {out_dir / 'study.md'}, {out_dir / 'study.png'}")
    return StudyResult(out_dir=out_dir, rows=rows, summary=summary)


def _public(row: dict) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("key", "fingerprint")}
