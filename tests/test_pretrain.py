"""`vt pretrain`: the methods, resume, the backbone file every task loads, and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vision_transfer.backbones import Preprocessing, create_backbone
from vision_transfer.errors import VTError
from vision_transfer.pretrain import METHODS, nt_xent, pretrain
from vision_transfer.pretrain.export import save_backbone
from vision_transfer.pretrain.monitor import effective_rank, embedding_metrics, uniformity
from vision_transfer.weights import file_metadata

TINY = ["model.backbone=mobilenet_v3_small", "model.weights=none", "train.image_size=32", "train.batch_size=4",
        "train.device=cpu", "data.num_workers=0", "run.tensorboard=false", "pretrain.monitor_images=16",
        "pretrain.hidden_dim=32", "pretrain.proj_dim=16"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight generated 40-px images in nested folders (labels would be the folder names: ignored)."""
    from vision_transfer.data.synthetic import make_classification_images

    root = tmp_path_factory.mktemp("unlabelled")
    for i, (img, label) in enumerate(make_classification_images(per_class=3, size=40, seed=0)[:8]):
        d = root / f"batch{i % 2}" / "deeper"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_and_writes_a_loadable_backbone(images, tmp_path, method):
    run = pretrain(images, overrides=[*TINY, f"pretrain.method={method}", "train.epochs=1",
                                      f"run.out_dir={tmp_path / 'run'}"])
    row = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(row["train_loss"]) and row["rankme"] >= 1 and "uniformity" in row
    meta = file_metadata(run.backbone_path)
    assert meta["backbone"] == "mobilenet_v3_small" and meta["method"] == method and meta["image_size"] == "32"
    bb = create_backbone("mobilenet_v3_small", weights=str(run.backbone_path))
    trained = run.backbone_path
    from safetensors.torch import load_file

    saved = load_file(str(trained))
    own = {k[5:]: v for k, v in bb.state_dict().items()}
    assert set(saved) == set(own) and all(torch.equal(saved[k], own[k]) for k in saved)
    assert bb.preprocessing == Preprocessing.from_dict(json.loads(meta["preprocessing"]))
    assert (tmp_path / "run/pretrain_curves.png").is_file()


def test_resume_after_interruption_gives_the_uninterrupted_weights(images, tmp_path):
    from safetensors.torch import load_file

    # BYOL: its EMA target must resume too; knn_val: the two batch folders act as classes
    common = [*TINY, "pretrain.method=byol", "train.epochs=2", f"pretrain.knn_val={images}"]
    full = pretrain(images, overrides=[*common, f"run.out_dir={tmp_path / 'full'}"])

    def interrupt(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(images, overrides=[*common, f"run.out_dir={tmp_path / 'cut'}"], callbacks=[interrupt])
    resumed = pretrain(images, overrides=[*common, f"run.out_dir={tmp_path / 'cut'}", "train.resume=auto"])
    a, b = load_file(str(full.backbone_path)), load_file(str(resumed.backbone_path))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "knn_accuracy" in rows[-1]


@pytest.fixture(scope="module")
def backbone_file(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    return str(pretrain(images, overrides=[*TINY, "train.epochs=1", f"run.out_dir={out}"]).backbone_path)


@pytest.mark.parametrize("strategy", ["linear_probe", "finetune"])
def test_pretrained_file_starts_classification(shapes_folder, tmp_path, backbone_file, strategy):
    import vision_transfer as vt

    run = vt.train("classification", overrides={
        "data.format": "folder", "data.root": str(shapes_folder), "model.backbone": "mobilenet_v3_small",
        "model.weights": backbone_file, "transfer.strategy": strategy, "train.epochs": 1, "train.image_size": 32,
        "train.batch_size": 8, "train.device": "cpu", "data.num_workers": 0, "run.out_dir": str(tmp_path / "run"),
        "run.tensorboard": False})
    assert 0.0 <= run.metrics["accuracy"] <= 1.0


def test_pretrained_file_starts_detection_and_segmentation(tmp_path, backbone_file):
    import vision_transfer as vt
    from vision_transfer.tasks.detection.synthetic import write_scenes

    p = write_scenes(tmp_path / "scenes", n=6, size=64, seed=1)
    base = {"model.backbone": "mobilenet_v3_small", "model.weights": backbone_file, "train.epochs": 1,
            "train.image_size": 64, "train.batch_size": 3, "train.device": "cpu", "data.num_workers": 0,
            "data.val_split": 0.34, "run.tensorboard": False}
    det = vt.train("detection", overrides={**base, "data.format": "coco", "data.train.images": p["coco"]["images"],
                                           "data.train.annotations": p["coco"]["annotations"],
                                           "model.fpn_channels": 16, "run.out_dir": str(tmp_path / "det")})
    assert "AP50" in det.metrics
    from vision_transfer.data.synthetic import make_scene

    for d in ("images", "masks"):
        (tmp_path / "seg_data" / d).mkdir(parents=True)
    for i in range(6):
        sc = make_scene(seed=i, size=64)
        Image.fromarray(sc["image"]).save(tmp_path / f"seg_data/images/s{i}.png")
        Image.fromarray((sc["mask"] > 0).astype(np.uint8)).save(tmp_path / f"seg_data/masks/s{i}.png")
    seg = vt.train("segmentation", overrides={**base, "data.format": "masks", "data.classes": ["background", "fg"],
                                              "data.train.images": str(tmp_path / "seg_data/images"),
                                              "data.train.masks": str(tmp_path / "seg_data/masks"),
                                              "model.decoder_channels": [16, 16, 16, 16, 16],
                                              "run.out_dir": str(tmp_path / "seg")})
    assert "mIoU" in seg.metrics


def test_vt_embed_accepts_the_file(tmp_path, images, backbone_file):
    from vision_transfer.cli import main

    assert main(["embed", str(images), "--backbone", "mobilenet_v3_small", "--weights", backbone_file,
                 "--image-size", "32", "--out", str(tmp_path / "index")]) == 0


# -- bad input: one line each ---------------------------------------------------------------------

def _one_line_error(capsys, argv) -> str:
    from vision_transfer.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vt pretrain: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_empty_folder_and_corrupt_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no images below" in _one_line_error(capsys, ["pretrain", str(tmp_path / "empty"), *TINY])
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.png").write_bytes(b"not a png at all" * i)
    assert "none of the 3 image files" in _one_line_error(capsys, ["pretrain", str(tmp_path / "bad"), *TINY])
    assert "does not exist" in _one_line_error(capsys, ["pretrain", str(tmp_path / "nowhere"), *TINY])


def test_unknown_method_and_key_are_one_line_errors(images, capsys):
    err = _one_line_error(capsys, ["pretrain", str(images), "pretrain.method=simclrr"])
    assert "simclr" in err and "byol" in err
    assert "pretrain.method" in _one_line_error(capsys, ["pretrain", str(images), "pretrain.metod=byol"])


def test_another_familys_file_names_the_first_mismatching_tensor(tmp_path, capsys):
    resnet = create_backbone("resnet18", weights=None)
    path = save_backbone(resnet, tmp_path / "resnet.safetensors", image_size=32)
    with pytest.raises(VTError, match=r"first: body\.\w+") as e:
        create_backbone("mobilenet_v3_small", weights=str(path))
    assert "\n" not in str(e.value)


# -- the pieces -----------------------------------------------------------------------------------

def test_nt_xent_prefers_aligned_views_and_monitors_see_collapse():
    z = torch.randn(16, 8)
    assert nt_xent(z, z + 0.01 * torch.randn(16, 8), 0.2) < nt_xent(z, torch.randn(16, 8), 0.2)
    spread = torch.randn(64, 32)
    collapsed = torch.randn(64, 2) @ torch.randn(2, 32) + 5.0   # dimensional collapse: a 2-d cone
    assert effective_rank(spread) > 20 and effective_rank(collapsed) < 2.5
    assert uniformity(spread) < uniformity(collapsed) <= 0.0
    labels = torch.arange(4).repeat_interleave(16)
    clustered = torch.nn.functional.one_hot(labels, 32).float() + 0.05 * torch.randn(64, 32)
    assert embedding_metrics(clustered, labels, k=5)["knn_accuracy"] == 1.0


def test_byol_target_follows_the_online_network_by_ema():
    from vision_transfer.pretrain import build_method

    m = build_method("byol", backbone=create_backbone("mobilenet_v3_small", weights=None), hidden_dim=16,
                     proj_dim=8, ema=0.9)
    assert all(not p.requires_grad for p in m.target_backbone.parameters())
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.target_backbone.parameters()]
    m.update_target()
    after = list(m.target_backbone.parameters())
    online = list(m.backbone.parameters())
    assert torch.allclose(after[0], 0.9 * before[0] + 0.1 * online[0])


def test_study_weights_axis_runs_each_strategy_per_starting_point(tmp_path, backbone_file):
    from vision_transfer.config import build_config
    from vision_transfer.studies import cell_config, study_grid

    cfg = build_config("classification", {"study": {"strategies": ["linear_probe", "scratch"], "seeds": 1,
                                                    "samples_per_class": [5], "weights": ["imagenet", backbone_file]}})
    cells = study_grid(cfg)
    assert [(c.strategy, c.weights) for c in cells] == [("linear_probe", "imagenet"),
                                                        ("linear_probe", backbone_file), ("scratch", None)]
    assert cells[1].label.startswith("linear_probe (") and cells[1].label.endswith("/backbone.safetensors)")
    assert len({c.folder for c in cells}) == 3 and len({c.key for c in cells}) == 3
    assert cell_config(cfg, cells[1], tmp_path).model.weights == backbone_file
    with pytest.raises(VTError, match="does not exist"):
        study_grid(build_config("classification", {"study": {"weights": [str(tmp_path / "missing.safetensors")]}}))
