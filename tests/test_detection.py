"""Detection plugin: builds over every backbone family, heads step, a short run learns, eval and predict."""
from __future__ import annotations

import json

import pytest
import torch

import vision_transfer.api as vt
from vision_transfer.backbones import create_backbone
from vision_transfer.backbones.torchvision_family import FAMILIES
from vision_transfer.engine.loop import read_metrics
from vision_transfer.errors import VTError
from vision_transfer.task import find_backbone
from vision_transfer.tasks.detection.synthetic import write_scenes

SMALLEST = {"alexnet": "alexnet", "vgg": "vgg11", "resnet": "resnet18", "densenet": "densenet121",
            "efficientnet": "efficientnet_b0", "mobilenet": "mobilenet_v3_small", "convnext": "convnext_tiny",
            "regnet": "regnet_y_400mf"}


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread


def _batch(n=2, size=64):
    images = [torch.rand(3, size, size) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 28.0]]), "labels": torch.tensor([1])} for _ in range(n)]
    return images, targets


def _families():
    assert set(SMALLEST) == set(FAMILIES), "a new torchvision family: add its smallest member here"
    return list(SMALLEST.values()) + ["tf_efficientnet_lite0", "timm/resnet10t"]


@pytest.mark.parametrize("name", _families())
def test_every_backbone_family_builds_a_detector(name):
    model = vt.build_model("detection", backbone=name, weights=None, num_classes=2, image_size=64, fpn_channels=16)
    assert find_backbone(model) is model.detector.backbone.body
    model.train()
    losses = model(*_batch())
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_objectness"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 48, 64)])
    assert out[0]["boxes"].shape[1] == 4 and (out[0]["labels"] >= 0).all()


def test_retinanet_builds_and_steps():
    model = vt.build_model("detection", backbone="mobilenet_v3_small", weights=None, num_classes=3, head="retinanet",
                           image_size=64, fpn_channels=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    images, targets = _batch()
    targets[0]["labels"] = torch.tensor([2])      # labels from 0: class 2 of 3 is valid without background
    loss = sum(model(images, targets).values())
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert model.detector.head.classification_head.cls_logits.weight.grad.abs().sum() > 0


def test_anchors_and_heads_are_checked():
    with pytest.raises(VTError, match="strides"):
        vt.build_model("detection", backbone="resnet18", num_classes=2, image_size=64, anchor_sizes=[[16], [32]])
    with pytest.raises(VTError, match="retinanet"):
        vt.build_model("detection", backbone="resnet18", num_classes=2, head="retina")
    m = vt.build_model("detection", backbone="resnet18", num_classes=2, image_size=64, anchor_sizes=[[8], [16], [32]],
                       aspect_ratios=[1.0])
    assert m.detector.rpn.anchor_generator.num_anchors_per_location() == [1, 1, 1]


def test_pretrained_backbone_keeps_batchnorm_in_eval():
    # ImageNet files of torchvision may be absent offline: the packaged Lite0 weights are not
    m = vt.build_model("detection", backbone="tf_efficientnet_lite0", weights="imagenet", num_classes=1,
                       image_size=64, fpn_channels=16)
    m.train()
    bns = [x for x in find_backbone(m).modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and not any(b.training for b in bns) and m.detector.rpn.training


def test_coco_weights_missing_is_one_line_error():
    from vision_transfer.tasks.detection.coco_detectors import coco_weights_file

    if coco_weights_file("fasterrcnn_mobilenet_v3_large_fpn")[1].is_file():
        pytest.skip("COCO weights are present here")
    with pytest.raises(VTError, match="fasterrcnn_mobilenet_v3_large_fpn-.*pth") as e:
        create_backbone("fasterrcnn_mobilenet_v3_large_fpn", weights="coco")
    assert "\n" not in str(e.value)
    with pytest.raises(VTError, match="model.weights=coco"):
        create_backbone("fasterrcnn_mobilenet_v3_large_fpn", weights="imagenet")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("detrun")
    p = write_scenes(root / "data", n=12, size=64, seed=1, negatives=1)["coco"]
    over = {"data.format": "coco", "data.train.images": p["images"], "data.train.annotations": p["annotations"],
            "data.val_split": 0.25, "data.num_workers": 0, "model.backbone": "mobilenet_v3_small",
            "model.weights": "none", "model.fpn_channels": 32, "train.epochs": 3, "train.image_size": 64,
            "train.batch_size": 4, "train.lr": 1e-3, "train.device": "cpu", "run.out_dir": str(root / "run"),
            "run.tensorboard": False}
    return root, vt.train("detection", overrides=over)


def test_short_run_learns_and_eval_reproduces_summary(run):
    root, r = run
    rows = read_metrics(r.out_dir / "metrics.jsonl")
    assert len(rows) == 3 and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert {"AP", "AP50", "ARl", "per_class_AP"} <= set(rows[-1]) and "_predictions" not in rows[-1]
    summary = json.loads((r.out_dir / "summary.json").read_text())
    metrics = vt.evaluate("detection", checkpoint=r.out_dir / "checkpoints" / "best.pt", out=root / "eval")
    assert metrics["AP"] == pytest.approx(summary["metrics"]["AP"], abs=1e-6)
    preds = json.loads((root / "eval" / "predictions.json").read_text())
    assert preds and {p["category_id"] for p in preds} <= {3, 10, 42}          # the file's own ids


def test_predict_writes_json_and_drawings(run):
    root, r = run
    out = root / "pred"
    rows = vt.predict("detection", checkpoint=r.out_dir / "checkpoints" / "best.pt",
                      inputs=[str(root / "data" / "images")], out=out, device="cpu", score_threshold=0.0)
    assert len(rows) == 13 and len(list(out.glob("*.png"))) == 13
    saved = json.loads((out / "predictions.json").read_text())
    assert saved[0]["width"] == 64 and all(d["label"] in ("square", "disc", "triangle")
                                          for row in saved for d in row["detections"])
