"""`vt train multitask`: three heads (label, boxes, masks of the same generated scenes) on one backbone,
per-head metrics each epoch, one head through eval / predict / export, the backbone file, bad input."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import vision_transfer as vt
from vision_transfer.cli import main
from vision_transfer.errors import VTError

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"model.backbone": "mobilenet_v3_small", "model.weights": "none", "train.image_size": 64,
        "train.batch_size": 4, "train.device": "cpu", "data.num_workers": 0, "run.tensorboard": False}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from vision_transfer.tasks.detection.synthetic import write_scenes

    return write_scenes(tmp_path_factory.mktemp("scenes"), n=8, size=64, formats=("coco", "masks", "labels"))


def entries(p: dict) -> list[dict]:
    """One image set, three tasks: the largest shape's class, the boxes, the semantic masks."""
    return [
        {"name": "cells", "task": "classification",
         "data": {"format": "csv", "train": p["labels"], "classes": ["disc", "square", "triangle"], "val_split": 0.25}},
        {"name": "boxes", "task": "detection", "model": {"fpn_channels": 16},
         "data": {"format": "coco", "train": p["coco"], "val_split": 0.25}},
        {"name": "masks", "task": "segmentation", "model": {"decoder_channels": [16, 16, 16, 16, 16]},
         "data": {"format": "masks", "train": {"images": p["masks"]["images"], "masks": p["masks"]["masks"]},
                  "classes": p["masks"]["classes"], "val_split": 0.25}},
    ]


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("mt-run")
    return vt.train("multitask", config={"multitask": {"tasks": entries(scenes)}},
                    overrides={**BASE, "train.epochs": 2, "run.out_dir": str(out)})


def test_three_heads_train_on_one_backbone_and_report_each_metric_per_epoch(run):
    rows = [json.loads(line) for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        for key in ("cells/accuracy", "boxes/AP50", "boxes/AP", "masks/mIoU", "mean_score", "train_loss"):
            assert key in row, key
        assert row["mean_score"] == pytest.approx((row["cells/accuracy"] + row["boxes/AP"] + row["masks/mIoU"]) / 3)
    model = run.model
    for name in ("cells", "boxes", "masks"):   # one encoder object under every head
        assert vt.get_task("classification") and model.heads[name].backbone is model.backbone
    summary = json.loads((run.out_dir / "summary.json").read_text())
    assert summary["monitor"] == "mean_score" and set(summary["heads"]) == {"cells", "boxes", "masks"}
    ckpt = torch.load(run.out_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert {e["name"]: e["task"] for e in ckpt["entries"]} == {"cells": "classification", "boxes": "detection",
                                                              "masks": "segmentation"}
    assert not any(k.startswith(("heads.cells.backbone.", "heads.masks.backbone.")) for k in ckpt["model"])   # once
    from vision_transfer.engine.checkpoint import load_model

    rebuilt, _ = load_model(run.out_dir / "checkpoints" / "last.pt")
    assert rebuilt.heads["masks"].backbone is rebuilt.backbone
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), rebuilt.state_dict()[k]), k


def test_one_head_through_eval_predict_and_export(run, scenes, tmp_path, capsys):
    ckpt = str(run.out_dir / "checkpoints" / "best.pt")
    m = vt.evaluate("multitask", checkpoint=ckpt, head="masks", out=tmp_path / "ev-masks")
    assert "mIoU" in m and (tmp_path / "ev-masks" / "metrics.json").is_file()
    assert main(["eval", "multitask", "--checkpoint", ckpt, "--task", "cells", "--out", str(tmp_path / "ev")]) == 0
    assert "accuracy" in json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert main(["predict", "multitask", "--checkpoint", ckpt, scenes["coco"]["images"], "--out",
                 str(tmp_path / "pred"), "multitask.head=boxes", "--score-threshold", "0.0"]) == 0
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert "detections" in json.dumps(preds)
    assert main(["eval", "multitask", "--checkpoint", ckpt]) == 2   # three heads: which one?
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cells, boxes, masks" in err and "--task" in err
    assert main(["eval", "multitask", "--checkpoint", ckpt, "--task", "cels"]) == 2
    assert "no head 'cels'" in capsys.readouterr().err
    assert main(["eval", "classification", "--checkpoint", ckpt, "--task", "cells"]) == 2   # not a multitask one
    assert "picks a head of a multitask checkpoint" in capsys.readouterr().err
    from vision_transfer.export.exporter import export_checkpoint

    side = export_checkpoint("multitask", checkpoint=ckpt, fmt="torchscript", out=tmp_path / "cells.pt", head="cells")
    assert side["task"] == "classification" and side["multitask_head"] == "cells"
    assert max(side["parity"].values()) < 1e-3


def test_backbone_file_starts_a_single_task_run(run, shapes_folder, tmp_path):
    from safetensors.torch import load_file

    from vision_transfer.backbones import create_backbone
    from vision_transfer.pretrain.export import backbone_state

    path = run.out_dir / "backbone.safetensors"
    saved = load_file(str(path))
    bb = create_backbone("mobilenet_v3_small", weights=str(path))
    assert all(torch.equal(v, saved[k]) for k, v in backbone_state(bb).items() if k in saved)
    single = vt.train("classification", overrides={**BASE, "model.weights": str(path), "data.format": "folder",
                                                   "data.root": str(shapes_folder), "train.epochs": 1,
                                                   "train.image_size": 32, "run.out_dir": str(tmp_path / "single")})
    assert "accuracy" in single.metrics


def test_uncertainty_weighting_learns_log_variances_with_proportional_batches(scenes, tmp_path):
    two = [entries(scenes)[0], {**entries(scenes)[0], "name": "type", "weight": 0.5}]   # "type": an nn.Module attribute
    res = vt.train("multitask", config={"multitask": {"tasks": two, "balance": "uncertainty",
                                                      "sampling": "proportional", "monitor": "cells/accuracy"}},
                   overrides={**BASE, "train.epochs": 1, "train.lr": 0.05, "run.out_dir": str(tmp_path)})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["monitor"] == "cells/accuracy" and set(summary["log_vars"]) == {"cells", "type"}
    assert any(abs(v) > 1e-4 for v in summary["log_vars"].values())   # trained by the shared optimizer
    assert "log_vars" in torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert res.best_epoch == 1
    more = vt.train("multitask", config={"multitask": {"tasks": two, "balance": "uncertainty",
                                                       "sampling": "proportional", "monitor": "cells/accuracy"}},
                    overrides={**BASE, "train.epochs": 2, "train.lr": 0.05, "run.out_dir": str(tmp_path),
                               "train.resume": "auto"})   # the shared engine's resume: epoch 2 only
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and more.best_epoch in (1, 2)


def _train_error(tasks: list, **multitask) -> str:
    with pytest.raises(VTError) as e:
        vt.train("multitask", config={"multitask": {"tasks": tasks, **multitask}}, overrides=BASE)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_entries_are_one_line_errors_naming_the_entry(scenes, tmp_path, capsys):
    good = entries(scenes)
    assert "multitask.tasks is empty" in _train_error([])
    msg = _train_error([{**good[2], "task": "segmentatoin"}])
    assert "entry 'masks'" in msg and "unknown task" in msg and "segmentation" in msg
    msg = _train_error([{**good[0], "data": {**good[0]["data"], "format": "coco"}}])
    assert "entry 'cells' (classification)" in msg and "not a classification format" in msg
    msg = _train_error([{**good[1], "model": {"head": "unet"}}])
    assert "entry 'boxes' (detection)" in msg and "unet" in msg
    msg = _train_error([{**good[0], "model": {"backbone": "resnet18"}}])
    assert "entry 'cells'" in msg and "shared" in msg
    msg = _train_error([good[0], {**good[0]}])
    assert "unique" in msg
    msg = _train_error([good[0]], monitor="boxes/AP")
    assert "multitask.monitor" in msg
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"multitask": {"tasks": [{**good[1], "data": {"format": "masks"}}]}}))
    assert main(["train", "multitask", "-c", str(recipe), "model.backbone=mobilenet_v3_small", "model.weights=none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("vt train: error: multitask entry 'boxes' (detection)")


def test_study_compares_single_and_multitask_on_the_same_budget(scenes, tmp_path):
    two = [entries(scenes)[0], entries(scenes)[2]]
    res = vt.study("multitask", config={"multitask": {"tasks": two}, "study": {"samples_per_class": [2], "seeds": 1}},
                   overrides={**BASE, "train.epochs": 1, "run.out_dir": str(tmp_path)})
    assert [r["strategy"] for r in res.rows] == ["single", "multitask"]
    assert all(r["metric"] == "accuracy" and r["num_train"] <= 6 for r in res.rows)
    assert (tmp_path / "study.md").is_file() and (tmp_path / "study.json").is_file()
    again = vt.study("multitask", config={"multitask": {"tasks": two}, "study": {"samples_per_class": [2], "seeds": 1}},
                     overrides={**BASE, "train.epochs": 1, "run.out_dir": str(tmp_path)})   # resumed: nothing reruns
    assert [r["value"] for r in again.rows] == [r["value"] for r in res.rows]


def test_two_process_gloo_run_trains_the_heads(scenes, tmp_path):
    """DDP under torchrun: the weighting sits inside the model's forward, so gradients all-reduce."""
    import os
    import subprocess
    import sys

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"multitask": {"tasks": [entries(scenes)[0], entries(scenes)[2]],
                                                    "balance": "uncertainty"}}))
    args = [f"{k}={v}" for k, v in {**BASE, "train.epochs": 1, "run.out_dir": str(tmp_path / "ddp")}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "vision_transfer.cli", "train", "multitask", "-c", str(recipe), *args],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    row = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "cells/accuracy" in row and "masks/mIoU" in row
