"""Domain adaptation: the layers, the diagnostics, adapted runs of every task on generated scenes
with a colour shift between domains, `vt adapt` (AdaBN), one-line errors and DDP with dann."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vision_transfer as vt
from vision_transfer.adapt.diagnostics import proxy_a_distance, snd
from vision_transfer.adapt.layers import ConditioningMap, grl_lambda, mk_mmd, reverse_gradient
from vision_transfer.errors import VTError

FAST = {"model.backbone": "mobilenet_v3_small", "model.weights": "none", "train.image_size": 32,
        "train.batch_size": 8, "train.device": "cpu", "data.num_workers": 0, "run.tensorboard": False,
        "adapt.diagnostic_images": 24}


def shifted_copy(src: Path, dst: Path) -> Path:
    """The same images with inverted colours (the target domain), same folder layout."""
    for p in src.rglob("*.png"):
        q = dst / p.relative_to(src)
        q.parent.mkdir(parents=True, exist_ok=True)
        a = np.array(Image.open(p))
        Image.fromarray((255 - a) if p.parent.name != "masks" else a).save(q)
    return dst


def textured_copy(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """The same images as |smooth random colour field - image| per channel (MNIST-M's blending
    rule, with a generated field for the photo patch): a colour and texture shift; masks unchanged."""
    rng = np.random.default_rng(seed)
    for p in sorted(src.rglob("*.png")):
        q = dst / p.relative_to(src)
        q.parent.mkdir(parents=True, exist_ok=True)
        a = np.array(Image.open(p))
        if p.parent.name != "masks":
            h, w = a.shape[:2]
            field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
            a = np.abs(np.asarray(field, dtype=np.int16) - a[..., :3]).astype(np.uint8)
        Image.fromarray(a).save(q)
    return dst


# -- the pieces ---------------------------------------------------------------------------------

def test_gradient_reversal_and_lambda_schedule():
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    assert grl_lambda(0.0) == 0.0 and grl_lambda(1.0) == pytest.approx(0.99991, abs=1e-4)
    assert grl_lambda(0.1) == pytest.approx(2 / (1 + np.exp(-1)) - 1)


def test_mmd_conditioning_map_and_diagnostics_see_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    assert mk_mmd(a, b) < 0.1 * mk_mmd(a, b + 2.0)
    assert ConditioningMap(8, 3)(a, torch.rand(64, 3)).shape == (64, 24)
    big = ConditioningMap(1280, 10)
    assert big.randomized and big(torch.randn(4, 1280), torch.rand(4, 10)).shape == (4, 1024)
    assert proxy_a_distance(a.numpy(), (b + 2.0).numpy()) > 1.5
    assert abs(proxy_a_distance(a.numpy(), b.numpy())) < 0.8
    confident = torch.eye(3)[torch.arange(60) % 3] * 10
    # three confident clusters of 20: each sample's similarity mass spreads evenly over its 19 twins
    assert snd(confident) == pytest.approx(np.log(19), abs=1e-3)


# -- classification -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dann_run(shapes_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapt")
    target = shifted_copy(shapes_folder, tmp / "target")
    run = vt.train("classification", overrides={
        **FAST, "data.format": "folder", "data.root": str(shapes_folder), "train.epochs": 2,
        "adapt.method": "dann", "adapt.target.images": str(target / "train"), "adapt.target.val": str(target / "val"),
        "run.out_dir": str(tmp / "run")})
    return tmp, run


def test_dann_run_reports_target_metrics_and_diagnostics(dann_run):
    tmp, run = dann_run
    summary = json.loads((tmp / "run/summary.json").read_text())
    assert set(summary["target_metrics"]) >= {"accuracy", "macro_f1", "confusion_matrix"}
    assert not any(k.startswith("target_") for k in summary["metrics"])
    pad = summary["adapt"]["proxy_a_distance"]
    assert -2 <= pad["before"] <= 2 and -2 <= pad["after"] <= 2
    assert (tmp / "run/domain_features.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (tmp / "run/metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["domain_acc"] <= 1 and "target_accuracy" in r and "snd" in r for r in rows)
    assert rows[0]["adapt_lambda"] < rows[1]["adapt_lambda"]


def test_adapted_checkpoint_loads_and_predicts_without_target_data(dann_run, shapes_folder):
    tmp, _ = dann_run
    state = torch.load(tmp / "run/checkpoints/best.pt", weights_only=True)["model"]
    assert not any("discriminator" in k for k in state)
    os.rename(tmp / "target", tmp / "target_gone")
    try:
        rows = vt.predict("classification", checkpoint=tmp / "run/checkpoints/best.pt",
                          inputs=[str(shapes_folder / "val" / "disc")], out=tmp / "pred", device="cpu")
    finally:
        os.rename(tmp / "target_gone", tmp / "target")
    assert len(rows) == 4 and (tmp / "pred/predictions.json").is_file()


def test_vt_adapt_reestimates_batchnorm_on_a_checkpoint(dann_run):
    from vision_transfer.cli import main

    tmp, _ = dann_run
    out = tmp / "adabn.pt"
    assert main(["adapt", "--checkpoint", str(tmp / "run/checkpoints/best.pt"), "--target",
                 str(tmp / "target/train"), "--out", str(out), "--device", "cpu"]) == 0
    a = torch.load(tmp / "run/checkpoints/best.pt", weights_only=True)
    b = torch.load(out, weights_only=True)
    means = [k for k in a["model"] if k.endswith("running_mean")]
    assert means and any(not torch.allclose(a["model"][k], b["model"][k]) for k in means)
    assert b["adapt"]["method"] == "adabn"
    m = vt.evaluate("classification", checkpoint=out, out=tmp / "eval",
                    overrides={"data.val.images": str(tmp / "target/val"), "data.num_workers": 0})
    assert 0 <= m["accuracy"] <= 1


def test_adabn_run_rewrites_best_with_target_statistics(shapes_folder, tmp_path):
    target = shifted_copy(shapes_folder, tmp_path / "target")
    vt.train("classification", overrides={
        **FAST, "data.format": "folder", "data.root": str(shapes_folder), "train.epochs": 1,
        "adapt.method": "adabn", "adapt.target.images": str(target / "train"),
        "adapt.target.val": str(target / "val"), "adapt.diagnostics": False, "run.out_dir": str(tmp_path / "run")})
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["adapt"]["method"] == "adabn" and "accuracy" in summary["target_metrics"]
    assert torch.load(tmp_path / "run/checkpoints/best.pt", weights_only=True)["adapt"]["method"] == "adabn"


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing", "empty", "no_images", "cdan_segmentation", "dann_probe", "unknown"])
def test_bad_adaptation_input_is_one_line(case, shapes_folder, tmp_path):
    target = tmp_path / "t"
    if case == "empty":
        target.mkdir()
    if case == "no_images":
        target.mkdir()
        (target / "notes.txt").write_text("not an image")
    over = {**FAST, "data.format": "folder", "data.root": str(shapes_folder), "train.epochs": 1,
            "adapt.method": "dann", "adapt.target.images": str(target), "run.out_dir": str(tmp_path / "run")}
    task = "classification"
    if case == "cdan_segmentation":
        task = "segmentation"
        over = {**FAST, "data.format": "masks", "data.train.images": str(tmp_path), "data.train.masks": str(tmp_path),
                "adapt.method": "cdan", "adapt.target.images": str(shapes_folder), "run.out_dir": str(tmp_path / "r")}
        from test_segmentation import write_folder

        write_folder(tmp_path, range(3), size=32, binary=True)
        over.update({"data.train.images": str(tmp_path / "images"), "data.train.masks": str(tmp_path / "masks"),
                     "data.classes": ["background", "fg"]})
    if case == "dann_probe":
        over.update({"transfer.strategy": "linear_probe", "adapt.target.images": str(shapes_folder / "val")})
    if case == "unknown":
        over["adapt.method"] = "coral"
    with pytest.raises(VTError) as e:
        vt.train(task, overrides=over)
    msg = str(e.value)
    assert "\n" not in msg
    expect = {"missing": "no such folder", "empty": "empty", "no_images": "no images", "cdan_segmentation": "cdan",
              "dann_probe": "linear probe", "unknown": "adapt.method"}[case]
    assert expect in msg


# -- detection and segmentation -------------------------------------------------------------------

def test_detection_dann_trains_evaluates_and_predicts_without_target(tmp_path):
    from vision_transfer.tasks.detection.synthetic import write_scenes

    src = write_scenes(tmp_path / "src", n=8, size=64, seed=1)["coco"]
    tgt = write_scenes(tmp_path / "tgt", n=6, size=64, seed=2)["coco"]
    shifted_copy(Path(tgt["images"]), tmp_path / "tgt_shifted")
    run = vt.train("detection", overrides={
        **FAST, "train.image_size": 64, "train.batch_size": 4, "train.epochs": 1, "model.fpn_channels": 32,
        "data.format": "coco", "data.train.images": src["images"], "data.train.annotations": src["annotations"],
        "data.val_split": 0.25, "adapt.method": "dann", "adapt.target.images": str(tmp_path / "tgt_shifted"),
        "adapt.target.val.images": str(tmp_path / "tgt_shifted"), "adapt.target.val.annotations": tgt["annotations"],
        "run.out_dir": str(tmp_path / "run")})
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert "AP50" in summary["target_metrics"] and "AP50" in run.metrics
    rows = vt.predict("detection", checkpoint=tmp_path / "run/checkpoints/best.pt", inputs=[src["images"]],
                      out=tmp_path / "pred", device="cpu")
    assert len(rows) == 8


def test_segmentation_dann_trains_evaluates_and_predicts_without_target(tmp_path):
    from test_segmentation import write_folder

    write_folder(tmp_path / "src", range(8), size=32, binary=True, min_radius=4)
    write_folder(tmp_path / "tgt", range(50, 56), size=32, binary=True, min_radius=4)
    shifted_copy(tmp_path / "tgt", tmp_path / "tgt_shifted")
    vt.train("segmentation", overrides={
        **FAST, "train.epochs": 1, "data.format": "masks", "data.classes": ["background", "fg"],
        "model.decoder_channels": [32, 16, 16, 16, 16],
        "data.train.images": str(tmp_path / "src/images"), "data.train.masks": str(tmp_path / "src/masks"),
        "data.val_split": 0.25, "adapt.method": "mmd", "adapt.target.images": str(tmp_path / "tgt_shifted/images"),
        "adapt.target.val.images": str(tmp_path / "tgt_shifted/images"),
        "adapt.target.val.masks": str(tmp_path / "tgt_shifted/masks"), "run.out_dir": str(tmp_path / "run")})
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert "mIoU" in summary["target_metrics"] and "mIoU" in summary["metrics"]
    rows = vt.predict("segmentation", checkpoint=tmp_path / "run/checkpoints/best.pt",
                      inputs=[str(tmp_path / "src/images")], out=tmp_path / "pred", device="cpu")
    assert len(rows) == 8


# -- DDP ------------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform != "linux", reason="needs torchrun (gloo)")
def test_two_process_gloo_run_with_dann(shapes_folder, tmp_path):
    target = shifted_copy(shapes_folder, tmp_path / "target")
    args = ["train", "classification", "data.format=folder", f"data.root={shapes_folder}", "train.epochs=2",
            "model.backbone=mobilenet_v3_small", "model.weights=none", "train.image_size=32", "train.batch_size=8",
            "data.num_workers=0", "run.tensorboard=false", "adapt.method=dann", f"adapt.target.images={target}/train",
            f"adapt.target.val={target}/val", "adapt.diagnostic_images=12", f"run.out_dir={tmp_path / 'two'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "vision_transfer.cli", *args], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("domain_acc" in r for r in rows)
    summary = json.loads((tmp_path / "two/summary.json").read_text())
    assert "accuracy" in summary["target_metrics"]
    model, _ = __import__("vision_transfer.engine.checkpoint", fromlist=["load_model"]).load_model(
        tmp_path / "two/checkpoints/last.pt")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_study_adapt_axis_scores_each_method_on_the_target(shapes_folder, tmp_path):
    from vision_transfer.config import load_config
    from vision_transfer.studies import study_from_config

    target = shifted_copy(shapes_folder, tmp_path / "target")
    over = [f"{k}={v}" for k, v in FAST.items()] + [
        "data.format=folder", f"data.root={shapes_folder}", "train.epochs=1", "study.strategies=[]",
        "study.samples_per_class=[4]", "study.seeds=1", "study.adapt=[none, adabn]", "adapt.diagnostics=false",
        f"adapt.target.images={target}/train", f"adapt.target.val={target}/val", f"run.out_dir={tmp_path / 'study'}"]
    result = study_from_config(load_config("classification", overrides=over))
    assert [r["strategy"] for r in result.rows] == ["adapt=none", "adapt=adabn"]
    assert all(r["metric"] == "target_accuracy" and 0 <= r["value"] <= 1 for r in result.rows)
    assert "adapt=adabn" in (tmp_path / "study/study.md").read_text()


@pytest.mark.parametrize("method", ["dann", "cdan", "mmd"])
def test_one_adaptation_step_reaches_backbone_and_discriminator(method):
    from vision_transfer.adapt.trainer import AdaptModule
    from vision_transfer.engine.transfer import param_groups
    from vision_transfer.task import get_task

    task = get_task("classification")
    model = vt.build_model("classification", backbone="mobilenet_v3_small", weights=None, num_classes=3)
    module = AdaptModule(model, task, method=method, num_classes=3, total_steps=10).train()
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    losses = module(batch, torch.randn(4, 3, 32, 32) + 1.0)
    losses["loss"].backward()
    assert int(module.step) == 1 and torch.isfinite(losses["loss"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.backbone.parameters())
    if method != "mmd":
        assert all(p.grad is not None for p in module.discriminator.parameters())
        lrs = {g["name"]: g["lr"] for g in param_groups(module, lr=1e-3, weight_decay=0.0)}
        assert lrs["head_x10"] == pytest.approx(1e-2)


# -- the shift is real: source-only loses on the textured target ----------------------------------

def test_segmentation_source_only_is_measurably_worse_on_a_textured_target(tmp_path):
    from test_segmentation import write_folder

    write_folder(tmp_path / "train", range(16), size=48, binary=True, max_objects=3, min_radius=4)
    write_folder(tmp_path / "val", range(100, 106), size=48, binary=True, max_objects=3, min_radius=4)
    textured_copy(tmp_path / "val", tmp_path / "tval")   # the same scenes and masks, shifted
    vt.train("segmentation", overrides={
        **FAST, "train.epochs": 3, "train.image_size": 48, "train.batch_size": 4, "train.lr": 1e-2,
        "data.format": "masks", "data.classes": ["background", "fg"], "model.decoder_channels": [32, 16, 16, 16, 16],
        "data.train.images": str(tmp_path / "train/images"), "data.train.masks": str(tmp_path / "train/masks"),
        "data.val.images": str(tmp_path / "val/images"), "data.val.masks": str(tmp_path / "val/masks"),
        "adapt.target.val.images": str(tmp_path / "tval/images"), "adapt.target.val.masks": str(tmp_path / "tval/masks"),
        "adapt.diagnostics": False, "run.out_dir": str(tmp_path / "run")})
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    source, target = summary["metrics"]["mIoU"], summary["target_metrics"]["mIoU"]
    assert source > 0.6 and target < source - 0.1, (source, target)



def test_detection_source_only_is_measurably_worse_on_a_textured_target(tmp_path):
    from vision_transfer.tasks.detection.synthetic import write_scenes

    src = write_scenes(tmp_path / "src", n=12, size=64, seed=1)["coco"]
    textured_copy(Path(src["images"]), tmp_path / "tsrc")   # the same scenes and boxes, shifted
    vt.train("detection", overrides={
        **FAST, "model.backbone": "tf_efficientnet_lite0", "model.weights": "imagenet", "model.fpn_channels": 32,
        "train.image_size": 64, "train.batch_size": 4, "train.epochs": 8, "data.format": "coco",
        "data.train.images": src["images"], "data.train.annotations": src["annotations"],
        "data.val.images": src["images"], "data.val.annotations": src["annotations"],   # the shift alone differs
        "adapt.target.val.images": str(tmp_path / "tsrc"), "adapt.target.val.annotations": src["annotations"],
        "adapt.diagnostics": False, "run.out_dir": str(tmp_path / "run")})
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    source, target = summary["metrics"]["AP50"], summary["target_metrics"]["AP50"]
    assert source > 0.2 and target < source - 0.1, (source, target)


@pytest.mark.parametrize("target_bn", ["running", "batch"])
def test_target_pass_batchnorm_reads_running_or_batch_statistics(target_bn):
    from torch.nn.modules.batchnorm import _BatchNorm

    from vision_transfer.adapt.trainer import AdaptModule
    from vision_transfer.task import get_task

    model = vt.build_model("classification", backbone="mobilenet_v3_small", weights=None, num_classes=3)
    module = AdaptModule(model, get_task("classification"), method="dann", num_classes=3, total_steps=10,
                         target_bn=target_bn).train()
    bn = next(m for m in module.backbone.modules() if isinstance(m, _BatchNorm))
    before = bn.running_mean.clone()
    module._target_forward(torch.randn(4, 3, 32, 32) + 3.0)
    assert bn.training                                          # the source's train mode is back
    assert torch.equal(bn.running_mean, before) == (target_bn == "running")
