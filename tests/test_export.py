"""vt export per task: ONNX / TorchScript parity, dynamic batch / image size, vt predict on .onnx, bad input."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import vision_transfer.api as vt
from vision_transfer.cli import main
from vision_transfer.data.synthetic import make_scene
from vision_transfer.engine.checkpoint import FORMAT, save_atomic
from vision_transfer.errors import VTError
from vision_transfer.export.exporter import export_checkpoint, sidecar_path
from vision_transfer.export.runtime import load_onnx
from vision_transfer.task import find_backbone

pytest.importorskip("onnxruntime")

# (task, backbone, head, options): the smallest models that still have every part of the task's graph
MODELS = {"classification": ("mobilenet_v3_small", "default", {}),
          "segmentation": ("mobilenet_v3_small", "default", {}),
          "detection": ("mobilenet_v3_small", "fasterrcnn", {"fpn_channels": 16, "image_size": 64})}


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread


def write_checkpoint(path, task: str, *, backbone: str, head: str = "default", image_size: int = 64,
                     num_classes: int = 3, **options):
    """A checkpoint of an untrained model, as `vt train` writes it (what export and predict read)."""
    torch.manual_seed(0)
    model = vt.build_model(task, backbone=backbone, weights=None, num_classes=num_classes, head=head, **options)
    if task == "detection":
        _fit_a_little(model)
    bb = find_backbone(model)
    save_atomic({"format": FORMAT, "task": task, "classes": [f"c{i}" for i in range(num_classes)],
                 "image_size": image_size, "preprocessing": bb.preprocessing.to_dict(), "config": {},
                 "model": model.state_dict(),
                 "model_spec": {"backbone": bb.name, "weights": None, "out_indices": list(bb.out_indices),
                                "head": head, "num_classes": num_classes, "options": options}}, path)
    return path


def _fit_a_little(model, steps: int = 20) -> None:
    """A few steps on two scenes: an untrained detector scores all boxes alike, and the order of
    ties after NMS is arbitrary in any runtime (parity is then ill-posed)."""
    scenes = [make_scene(seed=i, size=64) for i in range(2)]
    images = [torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255 for s in scenes]
    targets = [{"boxes": torch.from_numpy(s["boxes"]), "labels": torch.from_numpy(s["labels"])} for s in scenes]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-ckpts")
    return {task: write_checkpoint(root / f"{task}.pt", task, backbone=bb, head=head, **opts)
            for task, (bb, head, opts) in MODELS.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("export-images")
    for i, size in enumerate((64, 80)):
        Image.fromarray(make_scene(seed=i, size=size)["image"]).save(d / f"img{i}.png")
    return d


@pytest.mark.parametrize("task", list(MODELS))
def test_onnx_parity_dynamic_and_predict_matches_checkpoint(task, checkpoints, images, tmp_path):
    out = tmp_path / "model.onnx"
    side = export_checkpoint(task, checkpoint=checkpoints[task], fmt="onnx", out=out, dynamic=True)
    assert json.loads(sidecar_path(out).read_text())["classes"] == ["c0", "c1", "c2"]
    for name, diff in side["parity"].items():   # checked at the export's shape and another one
        assert diff <= (1e-3 if name == "boxes" else 1e-4), (name, diff)
    model, meta = load_onnx(out, task=task)
    if task == "detection":   # a batch of two images of other sizes than the export's
        outs = model([torch.rand(3, 72, 96), torch.rand(3, 50, 50)])
        assert [o["boxes"].shape[1] for o in outs] == [4, 4]
    else:                     # batch 3 where the export used 1
        assert model(torch.randn(3, 3, 64, 64)).shape[0] == 3
    ref = vt.predict(task, checkpoint=checkpoints[task], inputs=[str(images)], out=tmp_path / "pt",
                     score_threshold=0.0)
    got = vt.predict(task, checkpoint=out, inputs=[str(images)], out=tmp_path / "ort", score_threshold=0.0)
    _same_predictions(task, ref, got, tmp_path)


def _same_predictions(task, ref, got, tmp_path):
    assert len(ref) == len(got) == 2
    for r, g in zip(ref, got):
        if task == "classification":
            assert r["label"] == g["label"] and r["score"] == pytest.approx(g["score"], abs=1e-5)
        elif task == "segmentation":
            a = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "pt" / r["mask"])))
            b = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "ort" / g["mask"])))
            assert (a != b).float().mean() < 1e-3 and (tmp_path / "ort" / g["overlay"]).is_file()
        else:
            assert len(r["detections"]) == len(g["detections"]) and (tmp_path / "ort" / g["drawing"]).is_file()
            assert sorted(d["score"] for d in r["detections"]) == pytest.approx(
                sorted(d["score"] for d in g["detections"]), abs=2e-4)   # rounded to 4 places


def test_torchscript_export_parity(checkpoints, tmp_path):
    side = export_checkpoint("detection", checkpoint=checkpoints["detection"], fmt="torchscript",
                             out=tmp_path / "det.pt")
    assert side["parity"]["boxes"] <= 1e-3 and torch.jit.load(str(tmp_path / "det.pt")) is not None


def test_bad_input_is_one_line(checkpoints, tmp_path, capsys):
    ckpt = str(checkpoints["classification"])
    cases = [(["detection", "--format", "onnx"], "is a classification checkpoint"),
             (["classification", "--format", "tflite"], "--format 'tflite' is not supported"),
             (["classification", "--format", "onnx", "--image-size", "16"], "--image-size 16")]
    for args, expected in cases:
        assert main(["export", *args[:1], "--checkpoint", ckpt, "--out", str(tmp_path / "m.onnx"), *args[1:]]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    with pytest.raises(VTError, match="sidecar"):
        (tmp_path / "orphan.onnx").write_bytes(b"x")
        load_onnx(tmp_path / "orphan.onnx")
