"""transfer.strategy=lora and bitfit: what trains, that adapters sit on the path the stages run,
and that checkpoints hold plain (merged) weights that load without peft."""
from __future__ import annotations

import json

import pytest
import torch

import vision_transfer.api as vt
from vision_transfer.engine.checkpoint import load_model
from vision_transfer.config import TransferConfig
from vision_transfer.engine.transfer import apply_plan, plan_transfer
from vision_transfer.task import find_backbone
from tests.conftest import write_shapes_folder
from tests.test_foundation import TINY  # noqa: F401 - registers the tiny ViT / Swin backbones


def _planned(backbone: str, strategy: str):
    torch.manual_seed(0)
    model = vt.build_model("classification", backbone=backbone, weights=None, num_classes=3)
    bb = find_backbone(model)
    apply_plan(model, plan_transfer(TransferConfig(strategy=strategy), num_stages=len(bb.stages)))
    return model, bb


def _perturb_lora(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


@pytest.mark.parametrize("backbone", ["tiny_dinov2", "tf_efficientnet_lite0"])
def test_lora_trains_adapters_and_merges_into_plain_weights(backbone):
    x = torch.rand(2, 3, 64, 64)
    model, bb = _planned(backbone, "lora")
    model.eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head") or ".pyramid." in n for n in trainable)
    assert any("qkv.lora_A" in n for n in trainable) or any("conv_pw.lora_A" in n for n in trainable)
    with torch.no_grad():
        before = model(x)
        _perturb_lora(model)            # B = 0 at the start: only now do the adapters change the output
        after = model(x)
    assert not torch.allclose(before, after)   # the adapters are on the path the stages run
    sd = model.state_dict()
    assert not any("lora_" in k or "base_layer" in k for k in sd)
    plain = vt.build_model("classification", backbone=backbone, weights=None, num_classes=3).eval()
    plain.load_state_dict(sd)           # no peft needed: the merged weights are plain
    with torch.no_grad():
        assert torch.allclose(plain(x), after, atol=1e-5)
    fresh, _ = _planned(backbone, "lora")   # resume: plain weights into an adapted model, same function
    fresh.eval().load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(fresh(x), after, atol=1e-5)


def test_bitfit_trains_only_biases_and_norms():
    model, bb = _planned("tiny_clip", "bitfit")
    names = [n for n, p in bb.named_parameters() if p.requires_grad and not n.startswith("pyramid.")]
    assert names and all(n.endswith("bias") or "norm" in n for n in names)
    assert not any(p.requires_grad for n, p in bb.named_parameters() if n.endswith("qkv.weight"))


def test_lora_run_reports_trainable_params_and_round_trips(tmp_path):
    write_shapes_folder(tmp_path / "shapes", train_per_class=3, val_per_class=1, size=40)
    run = vt.train("classification", overrides={
        "data.format": "folder", "data.root": str(tmp_path / "shapes"), "model.backbone": "tiny_swin",
        "model.weights": "none", "transfer.strategy": "lora", "train.epochs": 1, "train.batch_size": 4,
        "train.image_size": 64, "train.device": "cpu", "data.num_workers": 0, "run.out_dir": str(tmp_path / "run"),
        "run.tensorboard": False})
    s = json.loads((run.out_dir / "summary.json").read_text())
    assert 0 < s["trainable_params"] < s["total_params"] and s["checkpoint_mb"] > 0
    model, _ = load_model(run.out_dir / "checkpoints" / "last.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), run.model.eval()(x), atol=1e-5)


def test_solved_probe_reports_only_the_head_as_trainable(tmp_path):
    write_shapes_folder(tmp_path / "shapes", train_per_class=3, val_per_class=1, size=40)
    run = vt.train("classification", overrides={
        "data.format": "folder", "data.root": str(tmp_path / "shapes"), "model.backbone": "tiny_swin",
        "model.weights": "none", "transfer.strategy": "linear_probe", "transfer.probe_solver": "lbfgs",
        "train.batch_size": 4, "train.image_size": 64, "train.device": "cpu", "data.num_workers": 0,
        "run.out_dir": str(tmp_path / "run"), "run.tensorboard": False})
    s = json.loads((run.out_dir / "summary.json").read_text())
    head = sum(p.numel() for p in run.model.head.parameters())
    assert s["trainable_params"] == head < s["total_params"]
