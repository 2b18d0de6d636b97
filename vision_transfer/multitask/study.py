"""`vt study multitask -c recipe.yaml`: single-task vs multi-task on the same labelled budget.

The first entry of `multitask.tasks` is the main task. For each `study.samples_per_class` k and seed:

    single     the main entry alone (`vt train <its task>` with its data, head and loss keys)
    multitask  the whole recipe, every entry at k per class (the other entries add their labels)

both with `data.max_per_class=k` on the main entry, the same backbone, epochs and optimizer settings
(train.lr, train.schedule, transfer.backbone_lr_mult as the multitask run resolves them). A row is
the main entry's monitored metric after the last epoch on its full validation split (as `vt study`:
never the epoch chosen on the split that scores it). Outputs as `vt study`: OUT/rows.jsonl
(a rerun skips finished cells), OUT/runs/<arm>/spc<k>/seed<s>/, study.json, study.md, study.png.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from ..config import Config, build_config
from ..errors import VTError

ARMS = ("single", "multitask")


def _cell_config(cfg: Config, arm: str, k: int, seed: int, run_dir: Path) -> Config:
    from .run import entry_config

    if arm == "single":
        main = cfg.multitask.tasks[0]
        tree = entry_config(main, cfg).model_dump(mode="json")
        task = tree.pop("task")
        tree["data"]["max_per_class"] = k
    else:
        tree = cfg.model_dump(mode="json")
        task = tree.pop("task")
        for e in tree["multitask"]["tasks"]:
            e["data"] = {**e["data"], "max_per_class": k}
    # the optimizer settings the multitask run resolves (run.py), for both arms: only the data differs
    lr = cfg.train.lr or min(entry_config(e, cfg).train.lr for e in cfg.multitask.tasks)
    tree["train"].update(seed=seed, resume="auto", lr=lr, schedule=cfg.train.schedule or "cosine")
    tree["transfer"]["backbone_lr_mult"] = cfg.transfer.backbone_lr_mult or 1.0
    tree["run"] = {**tree["run"], "out_dir": str(run_dir), "tensorboard": False}
    return build_config(task, tree)


def multitask_study(cfg: Config):
    """Run (or resume) the single vs multitask grid; -> `StudyResult`."""
    from ..api import train_from_config
    from ..engine.logging import console
    from ..studies import Cell, StudyResult, _append_row, _fingerprint, _public, read_rows
    from ..study_report import write_study
    from ..task import get_task

    if not cfg.multitask.tasks:
        raise VTError("multitask.tasks is empty: the study compares its first entry alone with the whole recipe")
    s = cfg.study
    if not s.samples_per_class or any(k < 1 for k in s.samples_per_class):
        raise VTError(f"study.samples_per_class must be a list of positive counts, got {s.samples_per_class}")
    main = cfg.multitask.tasks[0]
    metric = get_task(main.task).monitor
    out_dir = Path(cfg.run.out_dir) if cfg.run.out_dir else Path("runs") / f"study-multitask-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(cfg)
    rows_path = out_dir / "rows.jsonl"
    done = {r["key"]: r for r in read_rows(rows_path, fingerprint)}
    cells = [Cell("strategy", arm, k, cfg.train.seed + i) for arm in ARMS for k in s.samples_per_class
             for i in range(s.seeds)]
    for cell in cells:
        if cell.key in done:
            continue
        run_dir = out_dir / "runs" / cell.folder
        t0 = time.perf_counter()
        result = train_from_config(_cell_config(cfg, cell.strategy, cell.samples_per_class, cell.seed, run_dir))
        key = metric if cell.strategy == "single" else f"{main.name}/{metric}"
        history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        if key not in history[-1]:
            raise VTError(f"study: the run in {run_dir} has no {key!r}: the main entry {main.name!r} needs "
                          "validation data (data.val.* or data.val_split > 0)")
        summary = json.loads((run_dir / "summary.json").read_text())
        num_train = summary["num_train"] if "num_train" in summary else summary["heads"][main.name]["num_train"]
        row = {"key": cell.key, "fingerprint": fingerprint, **asdict(cell), "metric": metric,
               "value": float(history[-1][key]), "best_value": float(result.metrics.get(key, history[-1][key])),
               "train_time_s": round(time.perf_counter() - t0, 3), "num_train": num_train, "run_dir": str(run_dir)}
        _append_row(rows_path, row)
        done[cell.key] = row
    rows = [_public(done[c.key]) for c in cells]
    summary = write_study(out_dir, rows, task=f"{main.name} ({main.task}): single vs multitask", monitor=metric)
    console.print(f"[bold]study done[/bold]: {out_dir / 'study.md'}, {out_dir / 'study.png'}")
    return StudyResult(out_dir=out_dir, rows=rows, summary=summary)
