"""Foundation backbones: a DINOv2-, a CLIP- and a Swin-architecture backbone (random init, reduced
depth and width: no ViT weights exist offline) each train a classifier, a Faster R-CNN and a U-Net
for one short epoch on generated data and round-trip through their checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vision_transfer.api as vt
from vision_transfer.backbones import BACKBONES, create_backbone, register_backbone
from vision_transfer.backbones.foundation import FOUNDATION, build_foundation, licence_warning
from vision_transfer.data.synthetic import make_scene
from vision_transfer.engine.checkpoint import load_model
from vision_transfer.config import TransferConfig
from vision_transfer.engine.transfer import apply_plan, param_groups, plan_transfer
from vision_transfer.errors import VTError
from vision_transfer.task import find_backbone
from vision_transfer.tasks.detection.synthetic import write_scenes
from tests.conftest import write_shapes_folder

_VIT = dict(depth=2, embed_dim=48, num_heads=2)
TINY = {   # registry name -> (the real architecture, what shrinks it)
    "tiny_dinov2": ("vit_small_patch14_dinov2", _VIT),
    "tiny_clip": ("vit_base_patch16_clip_224", _VIT),
    "tiny_swin": ("swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 2, 2))),
}


def _register(name: str) -> None:
    arch, kwargs = TINY[name]

    @register_backbone(name, family="vit", override=True)
    def build(*, weights, out_indices=None):
        return build_foundation(arch, weights=weights, out_indices=out_indices, **kwargs)


for _n in TINY:
    _register(_n)


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread


def _common(root, name):
    return {"model.backbone": name, "model.weights": "none", "train.epochs": 1, "train.batch_size": 4,
            "train.image_size": 64, "train.device": "cpu", "data.num_workers": 0,
            "run.out_dir": str(root / "run"), "run.tensorboard": False}


def _data(task, root):
    if task == "classification":
        write_shapes_folder(root / "shapes", train_per_class=3, val_per_class=1, size=40)
        return {"data.format": "folder", "data.root": str(root / "shapes")}
    if task == "detection":
        p = write_scenes(root / "scenes", n=6, size=64, seed=1)["coco"]
        return {"data.format": "coco", "data.train.images": p["images"], "data.train.annotations": p["annotations"],
                "data.val_split": 0.34, "model.fpn_channels": 16}
    for split, seeds in (("train", range(6)), ("val", range(50, 52))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for s in seeds:
            sc = make_scene(seed=s, size=64, max_objects=2, min_radius=5)
            Image.fromarray(sc["image"]).save(root / split / "images" / f"s{s}.png")
            Image.fromarray((sc["mask"] > 0).astype(np.uint8)).save(root / split / "masks" / f"s{s}.png")
    return {"data.format": "masks", "data.classes": ["background", "fg"], "model.decoder_channels": [16, 16, 16, 16],
            **{f"data.{s}.{k}": str(root / s / k) for s in ("train", "val") for k in ("images", "masks")}}


def _probe_input(task):
    return [torch.rand(3, 64, 64)] if task == "detection" else torch.rand(1, 3, 64, 64)


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
@pytest.mark.parametrize("name", list(TINY))
def test_trains_one_epoch_and_round_trips_a_checkpoint(tmp_path, name, task):
    run = vt.train(task, overrides={**_common(tmp_path, name), **_data(task, tmp_path)})
    summary = json.loads((run.out_dir / "summary.json").read_text())
    assert summary["backbone"] == name and summary["epochs_run"] == 1
    model, _ = load_model(run.out_dir / "checkpoints" / "last.pt", task=task)
    trained = run.model.eval()
    x = _probe_input(task)
    with torch.inference_mode():
        a, b = trained(x), model(x)
    if task == "detection":
        a, b = a[0]["boxes"], b[0]["boxes"]
    assert torch.allclose(a, b, atol=1e-5)


def test_vit_levels_strides_and_stages():
    bb = create_backbone("tiny_dinov2")
    assert [f.stride for f in bb.feature_info] == [4, 8, 16, 32]
    assert [f.channels for f in bb.feature_info] == [12, 24, 48, 48]
    assert len(bb.stages) == 1 + _VIT["depth"]        # embedding, then one stage per block
    embed = dict(bb.stages[0].named_parameters())
    assert {"pos_embed", "cls_token"} <= set(embed)    # tokens freeze with the embedding
    outs = bb(torch.rand(2, 3, 96, 128))
    assert [tuple(o.shape[-2:]) for o in outs] == [(24, 32), (12, 16), (6, 8), (3, 4)]
    only = create_backbone("tiny_clip", out_indices=[2])
    assert [tuple(o.shape) for o in only(torch.rand(1, 3, 64, 64))] == [(1, 48, 4, 4)]


def test_freeze_layers_and_layer_decay_mean_blocks():
    model = vt.build_model("classification", backbone="tiny_dinov2", num_classes=3)
    bb = find_backbone(model)
    apply_plan(model, plan_transfer(TransferConfig(strategy="finetune", freeze_layers=2), num_stages=len(bb.stages)))
    assert not any(p.requires_grad for s in bb.stages[:2] for p in s.parameters())
    assert all(p.requires_grad for p in bb.stages[2].parameters())
    groups = param_groups(model, lr=1.0, weight_decay=0.0, layer_lr_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["stage0"] == pytest.approx(0.25) and lrs["stage2"] == pytest.approx(1.0) and lrs["head"] == 1.0


def test_sizes_off_the_grid_resize_with_a_note_or_fail_in_one_line(capsys):
    vit = create_backbone("tiny_dinov2")
    outs = vit(torch.rand(1, 3, 100, 70))
    assert [tuple(o.shape[-2:]) for o in outs][2] == (7, 5)
    captured = capsys.readouterr()
    assert "runs as 112x80" in (captured.out + captured.err).replace("\n", " ")
    with pytest.raises(VTError, match="multiples of 32"):
        create_backbone("tiny_swin")(torch.rand(1, 3, 100, 100))


def test_registry_families_and_licences():
    assert {BACKBONES.meta(n)["family"] for n in FOUNDATION} == {"vit", "swin", "convnext"}
    assert "vit_small_patch14_dinov2" in BACKBONES and "samvit_base_patch16" in BACKBONES
    from vision_transfer.backbones.listing import backbone_rows

    rows = {r["name"]: r for r in backbone_rows("convnextv2")}
    assert "cc-by-nc" in rows["convnextv2_atto"]["licence"]
    assert "not for commercial use" in licence_warning("convnextv2_atto", "imagenet")
    assert licence_warning("vit_small_patch14_dinov2", "imagenet") is None
    assert licence_warning("convnextv2_atto", "none") is None


def test_pretrained_foundation_weights_offline_fail_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(VTError, match="model.safetensors"):
        create_backbone("vit_small_patch14_dinov2", weights="imagenet")
