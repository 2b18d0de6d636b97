"""`vt study`: the grid, resumption, the summary statistics, the files, the freeze-layers axis,
and per-class subsampling for every kind of target."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from vision_transfer.cli import main
from vision_transfer.config import load_config
from vision_transfer import studies as study_mod
from vision_transfer.studies import cell_config, study_from_config, study_grid
from vision_transfer.study_report import summarise, t_interval
from vision_transfer.engine.subsample import TrainSubset, per_class_indices, subsample_train
from vision_transfer.errors import VTError

FAST = ["train.image_size=32", "train.batch_size=8", "train.epochs=2", "data.num_workers=0",
        "model.backbone=tf_efficientnet_lite0", "data.format=folder"]


def _cfg(root: Path, out: Path, *extra: str):
    return load_config("classification", overrides=[*FAST, f"data.root={root}", f"run.out_dir={out}", *extra])


def test_study_runs_the_grid_resumes_and_writes_json_md_png(shapes_folder, tmp_path, monkeypatch):
    trained: list = []
    real = study_mod.run_cell

    def counting(cfg, cell, out_dir, *, monitor):
        trained.append(cell)
        return real(cfg, cell, out_dir, monitor=monitor)

    monkeypatch.setattr(study_mod, "run_cell", counting)
    grid = ["study.strategies=[linear_probe, scratch]", "study.samples_per_class=[2]"]
    study_from_config(_cfg(shapes_folder, tmp_path, *grid, "study.seeds=1"))
    assert len(trained) == 2
    (tmp_path / "study.json").unlink()
    result = study_from_config(_cfg(shapes_folder, tmp_path, *grid, "study.seeds=2"))   # the grid grows
    assert len(trained) == 4, "the 2 finished cells must be skipped"
    data = json.loads((tmp_path / "study.json").read_text())
    assert data["rows"] == result.rows and len(data["rows"]) == 4
    for row in data["rows"]:
        assert {"strategy", "samples_per_class", "seed", "metric", "value", "train_time_s"} <= set(row)
        assert row["metric"] == "accuracy" and 0.0 <= row["value"] <= 1.0
        assert row["num_train"] == 3 * row["samples_per_class"]   # stratified: k per class, 3 classes
        assert Path(row["run_dir"]).is_relative_to(tmp_path / "runs")
        last = json.loads((Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()[-1])
        solved = row["strategy"] == "linear_probe"   # the L-BFGS probe: one solve, not two epochs
        assert last["accuracy"] == row["value"] and last["epoch"] == (1 if solved else 2)
    assert {(r["strategy"], r["samples_per_class"], r["seed"]) for r in data["rows"]} == \
        {(s, 2, seed) for s in ("linear_probe", "scratch") for seed in (0, 1)}
    assert len(data["summary"]) == 2
    for s in data["summary"]:
        values = [r["value"] for r in data["rows"]
                  if (r["strategy"], r["samples_per_class"]) == (s["strategy"], s["samples_per_class"])]
        assert s["n"] == 2 and s["mean"] == pytest.approx(np.mean(values))
        assert s["ci95_low"] <= s["mean"] <= s["ci95_high"]
    md = (tmp_path / "study.md").read_text()
    assert "| linear_probe |" in md and "| scratch |" in md and "per class 2" in md
    assert (tmp_path / "study.png").stat().st_size > 10_000
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 4


def test_study_refuses_to_mix_settings_in_one_folder(shapes_folder, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"key": "x", "fingerprint": "other"}) + "\n")
    with pytest.raises(VTError, match="other settings"):
        study_from_config(_cfg(shapes_folder, tmp_path, "study.strategies=[linear_probe]"))


def test_freeze_layers_axis_through_the_cli(shapes_folder, tmp_path):
    code = main(["study", "classification", *FAST, f"data.root={shapes_folder}", f"run.out_dir={tmp_path}",
                 "study.strategies=[]", "study.samples_per_class=[2]", "study.seeds=1",
                 "study.freeze_layers=[0, 5]", "train.epochs=1"])
    assert code == 0
    data = json.loads((tmp_path / "study.json").read_text())
    assert [(r["axis"], r["strategy"], r["freeze_layers"]) for r in data["rows"]] == \
        [("freeze_layers", "finetune", 0), ("freeze_layers", "finetune", 5)]
    assert (tmp_path / "study_layers.png").is_file() and "Which layers transfer" in (tmp_path / "study.md").read_text()
    assert (tmp_path / "runs" / "freeze5" / "spc2" / "seed0" / "summary.json").is_file()


def test_grid_and_cell_configs(tmp_path):
    cfg = load_config("classification", overrides=[
        "study.strategies=[lp_ft, scratch]", "study.samples_per_class=[5, 20]", "study.seeds=2", "train.seed=7",
        "study.freeze_layers=[1]", "transfer.freeze_layers=2"])
    cells = study_grid(cfg)
    assert len(cells) == 2 * 2 * 2 + 2 * 2 and {c.seed for c in cells} == {7, 8}
    scratch = cell_config(cfg, cells[4], tmp_path)
    assert (scratch.transfer.strategy, scratch.model.weights, scratch.transfer.freeze_layers) == ("finetune", None, 0)
    assert scratch.data.max_per_class == 5 and scratch.train.seed == 7 and scratch.train.resume == "auto"
    assert scratch.run.out_dir == str(tmp_path / "runs" / "scratch" / "spc5" / "seed7")
    lp_ft = cell_config(cfg, cells[0], tmp_path)
    assert (lp_ft.transfer.strategy, lp_ft.model.weights, lp_ft.transfer.freeze_layers) == ("lp_ft", "imagenet", 2)
    layer = cell_config(cfg, cells[-1], tmp_path)
    assert layer.transfer.freeze_layers == 1 and layer.run.out_dir.endswith(os.path.join("freeze1", "spc20", "seed8"))
    with pytest.raises(VTError, match="did you mean 'linear_probe'"):
        study_grid(load_config("classification", overrides=["study.strategies=[linear_prob]"]))


def test_t_interval_and_summary():
    mean, low, high = t_interval([0.5, 0.7])
    assert mean == pytest.approx(0.6) and high - mean == pytest.approx(12.7062 * 0.1 * np.sqrt(2) / np.sqrt(2), 1e-4)
    assert t_interval([0.4]) == (0.4, None, None)
    rows = [{"axis": "strategy", "strategy": "a", "freeze_layers": None, "samples_per_class": 5, "value": v}
            for v in (0.2, 0.4, 0.6)]
    (s,) = summarise(rows)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.4)
    assert s["ci95_low"] == pytest.approx(0.4 - 4.3027 * 0.2 / 3 ** 0.5, 1e-4)   # t(0.975, 2) = 4.3027


class _Boxes:
    """Targets like a detection dataset: several labels per image."""

    def __init__(self, labels):
        self.targets = [{"labels": np.asarray(x, dtype=np.int64)} for x in labels]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.targets[i]


class _Masks:
    """Like a segmentation dataset: classes read from masks, 255 ignored; set_epoch forwarded."""

    def __init__(self, masks):
        self.masks, self.epoch = masks, 0

    def __len__(self):
        return len(self.masks)

    def load(self, i):
        return None, self.masks[i]

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_per_class_subsampling_for_multi_label_targets():
    rng = np.random.default_rng(0)
    labels = [rng.choice(4, size=rng.integers(1, 4), p=[0.6, 0.3, 0.07, 0.03]).tolist() for _ in range(200)]
    ds = _Boxes(labels)
    for k in (1, 3, 5):
        idx = per_class_indices([set(x) for x in labels], per_class=k, seed=1)
        assert idx == per_class_indices([set(x) for x in labels], per_class=k, seed=1)   # seeded
        counts = np.zeros(4, int)
        for i in idx:
            for c in set(labels[i]):
                counts[c] += 1
        available = np.array([sum(c in x for x in labels) for c in range(4)])
        assert (counts >= np.minimum(k, available)).all() and len(idx) <= 4 * k
        sub = subsample_train(ds, per_class=k, seed=1)
        assert isinstance(sub, TrainSubset) and list(sub.indices) == idx and sub.targets is ds.targets
    assert per_class_indices([set(x) for x in labels], per_class=5, seed=2) != \
        per_class_indices([set(x) for x in labels], per_class=5, seed=1)
    masks = [np.array([[0, 1], [255, 255]]), np.array([[0, 0], [0, 0]]), np.array([[2, 0], [0, 0]]),
             np.array([[1, 2], [0, 255]])]
    sub = subsample_train(_Masks(masks), per_class=1, seed=0)
    chosen = set().union(*({int(v) for v in np.unique(masks[i])} - {255} for i in sub.indices))
    assert chosen == {0, 1, 2} and len(sub) <= 2
    sub.set_epoch(3)
    assert sub.dataset.epoch == 3
    whole = _Boxes([[0], [1]])
    assert subsample_train(whole, per_class=4, seed=0) is whole   # nothing to drop: the dataset itself
    assert len(subsample_train(_Boxes([[0]] * 10), fraction=0.3, seed=0)) == 3
