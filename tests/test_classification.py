"""Classification end to end on generated shapes: learning, eval parity, predict, checkpoints,
freezing, resume."""
from __future__ import annotations

import json

import pytest
import torch

import vision_transfer as vt
from vision_transfer.engine.checkpoint import load_model, read_checkpoint
from vision_transfer.config import TransferConfig
from vision_transfer.engine.transfer import apply_plan, param_groups, plan_transfer, train_mode
from vision_transfer.errors import VTError

FAST = {"train.image_size": 32, "train.batch_size": 8, "data.num_workers": 0, "run.tensorboard": False}


def _train(root, out, **overrides):
    return vt.train("classification", overrides={"data.format": "folder", "data.root": str(root),
                                                 "run.out_dir": str(out), **FAST, **overrides})


@pytest.fixture(scope="module")
def probe_run(shapes_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    run = _train(shapes_folder, out, **{"model.backbone": "tf_efficientnet_lite0", "model.weights": "imagenet",
                                        "transfer.strategy": "linear_probe", "train.epochs": 15})
    return run, out


def test_linear_probe_learns_and_writes_the_run_folder(probe_run):
    run, out = probe_run
    assert run.metrics["accuracy"] >= 0.9   # chance is 1/3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["metrics"]["accuracy"] == run.metrics["accuracy"]
    assert {"accuracy", "top5_accuracy", "macro_f1", "per_class", "confusion_matrix"} <= set(summary["metrics"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and rows[0]["solver"] == "lbfgs"   # solved, not trained for 15 epochs
    for f in ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "confusion_matrix.png"):
        assert (out / f).is_file(), f


def test_eval_reproduces_the_summary_and_predict_writes_json(probe_run, shapes_folder, tmp_path):
    run, out = probe_run
    metrics = vt.evaluate("classification", checkpoint=out / "checkpoints" / "best.pt",
                          overrides={"data.num_workers": 0}, out=tmp_path / "ev")
    summary = json.loads((out / "summary.json").read_text())
    assert metrics["accuracy"] == summary["metrics"]["accuracy"]
    assert metrics["confusion_matrix"] == summary["metrics"]["confusion_matrix"]
    for f in ("metrics.json", "report.md", "report.html", "confusion_matrix.png"):
        assert (tmp_path / "ev" / f).is_file()
    rows = vt.predict("classification", checkpoint=out / "checkpoints" / "best.pt",
                      inputs=[str(shapes_folder / "val")], out=tmp_path / "pred", topk=2)
    saved = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(saved) == 12 == len(rows) and {"image", "label", "score", "topk"} <= set(saved[0])
    correct = sum(r["label"] in r["image"].split("/")[-2] for r in saved)
    assert correct / len(saved) == pytest.approx(summary["metrics"]["accuracy"], abs=1e-9)


def test_checkpoint_rebuilds_without_config(probe_run, shapes_folder):
    run, out = probe_run
    model, meta = load_model(out / "checkpoints" / "best.pt")
    assert meta["classes"] == ["disc", "square", "triangle"] and tuple(meta["preprocessing"]["mean"]) == (0.5,) * 3
    x = torch.randn(2, 3, 32, 32)
    ref = run.model.eval().cpu()
    ckpt_state = read_checkpoint(out / "checkpoints" / "best.pt")["model"]
    ref.load_state_dict(ckpt_state)
    with torch.inference_mode():
        assert torch.allclose(model(x), ref(x), atol=1e-6)
    with pytest.raises(VTError, match="is a classification checkpoint, not detection"):
        load_model(out / "checkpoints" / "best.pt", task="detection")


def test_finetune_freezes_exactly_the_first_stages():
    model = vt.build_model("classification", backbone="resnet18", num_classes=3)
    stages = model.backbone.stages
    apply_plan(model, plan_transfer(TransferConfig(strategy="finetune", freeze_layers=2), num_stages=len(stages)))
    assert all(not p.requires_grad for s in stages[:2] for p in s.parameters())
    assert all(p.requires_grad for s in stages[2:] for p in s.parameters())
    bn_frozen = [m for m in stages[0].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn_live = [m for m in stages[3].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    before = (bn_frozen.running_mean.clone(), bn_live.running_mean.clone())
    train_mode(model)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert torch.equal(bn_frozen.running_mean, before[0]) and not torch.equal(bn_live.running_mean, before[1])
    assert all(p.grad is None for p in stages[0].parameters())
    groups = param_groups(model, lr=1e-3, weight_decay=1e-4, backbone_lr_mult=0.1, layer_lr_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    n = len(stages)
    assert lrs["head"] == 1e-3 and lrs[f"stage{n - 1}"] == pytest.approx(1e-4)
    assert lrs["stage0"] == pytest.approx(1e-4 * 0.5 ** (n - 1))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    linear = plan_transfer(TransferConfig(strategy="linear_probe"), num_stages=n)
    apply_plan(model, linear)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_resume_reaches_the_same_weights(shapes_folder, tmp_path):
    common = {"model.backbone": "mobilenet_v3_small", "model.weights": None, "transfer.strategy": "finetune",
              "train.epochs": 3, "train.lr": 1e-3}
    _train(shapes_folder, tmp_path / "straight", **common)

    def interrupt(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vt.train("classification", overrides={"data.format": "folder", "data.root": str(shapes_folder),
                                              "run.out_dir": str(tmp_path / "resumed"), **FAST, **common},
                 callbacks=[interrupt])
    assert read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 2
    _train(shapes_folder, tmp_path / "resumed", **common, **{"train.resume": "auto"})
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_custom_head_example_runs():
    import runpy
    from pathlib import Path

    result = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "custom_head.py"), run_name="__test__")
    run = result["main"](epochs=2, quiet=True)
    assert run.metrics["accuracy"] > 0.5


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0"])
def test_frozen_batchnorm_is_used_by_every_stage(name):
    from torch.nn.modules.batchnorm import _BatchNorm

    model = vt.build_model("classification", backbone=name, num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    reference = model.eval()(x)
    apply_plan(model, plan_transfer(TransferConfig(strategy="finetune", bn="frozen"), num_stages=len(model.backbone.stages)))
    assert not [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert not [m for s in model.backbone.stages for m in s.modules() if isinstance(m, _BatchNorm)]
    # train mode changes nothing: statistics are frozen, activations of BN+act layers are kept
    assert torch.allclose(model.train()(x), reference, atol=1e-4)


def test_a_non_finite_loss_stops_with_one_clear_line(shapes_folder, tmp_path):
    class Exploding(torch.nn.Module):
        def __init__(self, in_channels, num_classes):
            super().__init__()
            self.fc = torch.nn.Linear(in_channels, num_classes)

        def forward(self, x):
            return self.fc(x.mean((2, 3))) * float("nan")

    with pytest.raises(VTError, match=r"the loss became nan at epoch 1.*lower train.lr"):
        vt.train("classification", overrides={"data.format": "folder", "data.root": str(shapes_folder),
                                              "run.out_dir": str(tmp_path), "model.backbone": "mobilenet_v3_small",
                                              "model.weights": None, "train.epochs": 1, **FAST},
                 head=lambda *, in_channels, num_classes, **_: Exploding(in_channels, num_classes))
