"""One shared layer: one command grammar, tasks and heads from their registries, a fourth task as one
package, a custom backbone in a few lines, one hold-out rule and one predict loop for every task."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vision_transfer as vt
from vision_transfer import plugins
from vision_transfer.cli import main, split_overrides
from vision_transfer.data.split import hold_out, val_count

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("classification", "detection", "segmentation")


def _err(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pattern in err, err


# -- one grammar ------------------------------------------------------------------------------
def test_overrides_are_split_off_anywhere_but_never_a_flag_value():
    argv = ["eval", "classification", "--checkpoint", "best.pt", "data.root=cells", "--out", "ev", "train.seed=3"]
    assert split_overrides(argv) == (["eval", "classification", "--checkpoint", "best.pt", "--out", "ev"],
                                     ["data.root=cells", "train.seed=3"])
    assert split_overrides(["predict", "classification", "--out", "a.b=c", "x.jpg"])[1] == []


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, shapes_folder):
    out = tmp_path_factory.mktemp("probe")
    # key=value before and after the flags of `vt train` too
    assert main(["train", "classification", f"data.root={shapes_folder}", "--device", "cpu",
                 "transfer.strategy=linear_probe", "model.backbone=resnet18", "model.weights=none",
                 "train.epochs=1", "train.image_size=32", f"run.out_dir={out}", "data.num_workers=0"]) == 0
    return out


def test_eval_takes_config_keys_after_its_flags(probe_run, shapes_folder, tmp_path):
    ckpt = probe_run / "checkpoints" / "best.pt"
    assert main(["eval", "classification", "--checkpoint", str(ckpt), f"data.root={shapes_folder}",
                 "--out", str(tmp_path / "ev"), "train.batch_size=4"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] >= 0


def test_config_yaml_holds_the_resolved_defaults(probe_run):
    import yaml

    cfg = yaml.safe_load((probe_run / "config.yaml").read_text())
    assert cfg["train"]["lr"] == 1e-2 and cfg["train"]["schedule"] == "cosine"   # probe defaults
    assert cfg["model"]["head"] == "linear" and cfg["transfer"]["cache_features"] is True
    assert cfg["train"]["device"] == "cpu"                                          # --device is train.device


def test_unused_keys_and_flags_name_the_command(capsys, probe_run, tmp_path):
    ckpt = str(probe_run / "checkpoints" / "best.pt")
    _err(capsys, ["eval", "classification", "--checkpoint", ckpt, "train.epochs=3"], "vt eval does not use train.epochs")
    _err(capsys, ["eval", "classification", "--checkpoint", ckpt, "--backend", "pycocotools"],
         "does not use --backend")
    _err(capsys, ["predict", "classification", "--checkpoint", ckpt, str(tmp_path), "--out", "o", "model.head=mlp"],
         "vt predict does not use model.head")
    _err(capsys, ["train", "classification", "study.seeds=3"], "study.* keys are for vt study")
    _err(capsys, ["predict", "classification", "--checkpoint", ckpt, str(tmp_path), "--out", "o", "--device", "cpu",
                  "train.device=cpu"], "--device and train.device name the same setting")


def test_device_is_accepted_the_same_way_by_every_model_command(probe_run, shapes_folder, tmp_path):
    ckpt = str(probe_run / "checkpoints" / "best.pt")
    img = next((shapes_folder / "val").rglob("*.png"))
    assert main(["predict", "classification", "train.device=cpu", "--checkpoint", ckpt, str(img),
                 "--out", str(tmp_path / "p")]) == 0
    assert main(["embed", str(shapes_folder / "val"), "train.device=cpu", "train.image_size=32", "--backbone",
                 "resnet18", "--weights", "none", "--out", str(tmp_path / "idx")]) == 0
    ident = json.loads(next((tmp_path / "idx").glob("*.json")).read_text())
    assert "32" in json.dumps(ident)


# -- tasks and heads from their registries ------------------------------------------------------
def test_no_list_of_task_names_outside_the_registry():
    for path in (ROOT / "vision_transfer").rglob("*.py"):
        text = path.read_text()
        if path.name == "plugins.py":
            continue
        assert '("classification", "detection", "segmentation")' not in text, path


def test_heads_list_every_task(capsys):
    assert main(["heads", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(TASKS) <= set(rows)
    defaults = {t: [h["name"] for h in rows[t] if h["default"]] for t in TASKS}
    assert defaults == {"classification": ["linear"], "detection": ["fasterrcnn"], "segmentation": ["unet"]}


def test_backbones_lists_plugin_backbones_whatever_was_imported_first():
    out = subprocess.run([sys.executable, "-m", "vision_transfer.cli", "backbones", "--json"],
                         capture_output=True, text=True, check=True).stdout
    families = {r["family"] for r in json.loads(out)}
    names = {r["name"] for r in json.loads(out)}
    assert any("fasterrcnn" in n for n in names), sorted(families)


def _register_tiny_backbone():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import custom_backbone  # noqa: F401 - registers tiny_cnn
    finally:
        sys.path.pop(0)


class _MeanMax(nn.Module):
    def __init__(self, c, n):
        super().__init__()
        self.fc = nn.Linear(2 * c, n)

    def forward(self, x):
        return self.fc(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))


def _register_test_heads():
    from vision_transfer.tasks.detection import DetectorInputs  # noqa: F401 - documents the contract
    from vision_transfer.tasks.detection.heads import HEADS as DET

    if "meanmax_test" not in vt.get_task("classification").heads:
        @vt.register_head("classification", "meanmax_test")
        def meanmax(*, in_channels, num_classes, **_):
            """mean and max pooled features, one linear layer"""
            return _MeanMax(in_channels, num_classes)

    if "retina_alias" not in vt.get_task("detection").heads:
        @vt.register_head("detection", "retina_alias", background=DET.meta("retinanet").get("background", False))
        def retina_alias(spec):
            """RetinaNet under another name"""
            return DET.get("retinanet")(spec)

    if "conv1x1" not in vt.get_task("segmentation").heads:
        @vt.register_head("segmentation", "conv1x1")
        def conv1x1(*, feature_info, num_classes, **_):
            """one 1x1 convolution on the stride-4 map"""
            class Head(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv, self.level = nn.Conv2d(feature_info[1].channels, num_classes, 1), 1

                def forward(self, feats):
                    return self.conv(feats[self.level])
            return Head()


def _task_data(task: str, root: Path) -> dict:
    """Tiny data (4 train + 2 val images) and a folder to predict with one corrupt file in it."""
    from vision_transfer.data.synthetic import make_scene

    pred = root / "predict"
    pred.mkdir(parents=True)
    (pred / "broken.png").write_bytes(b"\x89PNG not really")
    if task == "classification":
        for split, n in (("train", 4), ("val", 2)):
            for c in ("a", "b"):
                (root / split / c).mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(np.full((32, 32, 3), 40 if c == "a" else 200, np.uint8)).save(
                        root / split / c / f"{i}.png")
        Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(pred / "x.png")
        return {"data.root": str(root)}
    if task == "detection":
        from vision_transfer.tasks.detection.synthetic import write_scenes

        tr = write_scenes(root / "train", n=4, size=64)["coco"]
        va = write_scenes(root / "val", n=2, size=64, seed=1)["coco"]
        Image.open(next(Path(va["images"]).glob("*.png"))).save(pred / "x.png")
        return {"data.format": "coco", "data.train.images": tr["images"], "data.train.annotations": tr["annotations"],
                "data.val.images": va["images"], "data.val.annotations": va["annotations"], "train.image_size": 64}
    for split, n in (("train", 4), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            s = make_scene(seed=i + (10 if split == "val" else 0), size=64)
            Image.fromarray(s["image"]).save(root / split / "images" / f"s{i}.png")
            Image.fromarray((s["mask"] > 0).astype(np.uint8)).save(root / split / "masks" / f"s{i}.png")
    Image.open(root / "val" / "images" / "s0.png").save(pred / "x.png")
    return {"data.format": "masks", "data.classes": ["background", "fg"],
            "data.train.images": str(root / "train/images"), "data.train.masks": str(root / "train/masks"),
            "data.val.images": str(root / "val/images"), "data.val.masks": str(root / "val/masks")}


@pytest.mark.parametrize("task,head", [("classification", "meanmax_test"), ("detection", "retina_alias"),
                                       ("segmentation", "conv1x1")])
def test_a_head_by_name_on_a_custom_backbone_trains_checkpoints_loads_and_predicts(task, head, tmp_path):
    """name -> model.head=NAME -> train -> checkpoint -> vt.load_model -> predict, on the few-line
    backbone of examples/custom_backbone.py; the predict loop skips and counts a corrupt file."""
    _register_tiny_backbone()
    _register_test_heads()
    overrides = {**_task_data(task, tmp_path), "model.backbone": "tiny_cnn", "model.weights": None,
                 "model.head": head, "train.epochs": 1, "train.batch_size": 2, "train.device": "cpu",
                 "data.num_workers": 0, "run.out_dir": str(tmp_path / "run")}
    overrides.setdefault("train.image_size", 32 if task == "classification" else 64)
    run = vt.train(task, overrides=overrides)
    ckpt = run.out_dir / "checkpoints" / "best.pt"
    model, meta = vt.load_model(ckpt)
    assert meta["model_spec"]["head"] == head and meta["model_spec"]["backbone"] == "tiny_cnn"
    rows = vt.predict(task, checkpoint=ckpt, inputs=[str(tmp_path / "predict")], out=tmp_path / "pred", device="cpu")
    assert [Path(r["image"]).name for r in rows] == ["x.png"]          # broken.png skipped, counted
    written = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(written) == 1 and not any(k.startswith("_") for k in written[0])
    assert not list((tmp_path / "pred").glob(".*tmp*"))                # atomic writes leave no temporaries


# -- a fourth task is one package ------------------------------------------------------------------
def test_a_task_from_an_entry_point_trains_evaluates_predicts_and_lists_heads(tmp_path, monkeypatch, capsys,
                                                                             shapes_folder):
    pkg = tmp_path / "site"
    (pkg / "my_vt_task").mkdir(parents=True)
    (pkg / "my_vt_task" / "__init__.py").write_text(textwrap.dedent('''
        from vision_transfer.tasks.classification import Classification

        class Defects(Classification):
            """Defect / no defect: a classification task with its own defaults."""
            default_image_size = 32
    '''))
    dist = pkg / "my_vt_task-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-vt-task\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vision_transfer.tasks]\ndefects = my_vt_task:Defects\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(plugins, "_discovered", False)
    assert "defects" in plugins.task_names()
    out = tmp_path / "run"
    common = ["model.backbone=resnet18", "model.weights=none", "data.num_workers=0", "train.device=cpu"]
    assert main(["train", "defects", f"data.root={shapes_folder}", "train.epochs=1", f"run.out_dir={out}",
                 *common[:3]]) == 0
    ckpt = out / "checkpoints" / "best.pt"
    assert torch.load(ckpt, weights_only=True)["task"] == "defects"
    assert main(["eval", "defects", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev")]) == 0
    assert main(["predict", "defects", "--checkpoint", str(ckpt), str(shapes_folder / "val"),
                 "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["heads", "defects", "--json"]) == 0
    assert "linear" in [h["name"] for h in json.loads(capsys.readouterr().out)["defects"]]
    plugins.TASKS._items.pop("defects", None)   # noqa: SLF001 - leave the registry as other tests expect


# -- one hold-out rule ------------------------------------------------------------------------------
def test_the_hold_out_rule():
    assert [val_count(n, 0.2) for n in (0, 1, 2, 3, 5, 10, 11)] == [0, 0, 1, 1, 1, 2, 2]
    assert val_count(10, 0.0) == 0 and val_count(2, 0.9) == 1
    tr, va = hold_out(10, fraction=0.3, seed=0)
    assert len(va) == 3 and sorted(tr + va) == list(range(10)) and tr == sorted(tr)
    assert hold_out(10, fraction=0.3, seed=0) == (tr, va) and hold_out(10, fraction=0.3, seed=1) != (tr, va)
    tr, va = hold_out(6, fraction=0.5, seed=0, labels=[0, 0, 0, 0, 1, 1])
    assert sorted(i for i in va if i < 4).__len__() == 2 and sum(i >= 4 for i in va) == 1


@pytest.mark.parametrize("task", TASKS)
def test_two_images_at_0_2_give_one_validation_image_in_every_task(task, tmp_path):
    from vision_transfer.backbones.base import Preprocessing
    from vision_transfer.config import load_config

    data = _task_data(task, tmp_path)
    keep = {k: v for k, v in data.items() if not k.startswith("data.val.") and k != "train.image_size"}
    if task == "classification":   # one folder of class folders, two images each
        keep = {"data.root": str(tmp_path / "val")}
    else:
        from vision_transfer.tasks.detection.synthetic import write_scenes

        if task == "detection":
            two = write_scenes(tmp_path / "two", n=2, size=64)["coco"]
            keep.update({"data.train.images": two["images"], "data.train.annotations": two["annotations"]})
        else:
            imgs, masks = Path(keep["data.train.images"]), Path(keep["data.train.masks"])
            for p in sorted(imgs.glob("*.png"))[2:]:
                p.unlink()
                (masks / p.name).unlink()
    cfg = load_config(task, overrides=[f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in keep.items()]
                      + ["data.val_split=0.2"])
    splits = vt.get_task(task).build_datasets(data=cfg.data, image_size=64, preprocessing=Preprocessing(), seed=0)
    per_group = 2 if task == "classification" else 1   # classification: stratified, one per class
    assert splits.val is not None and len(splits.val) == per_group, task
    assert len(splits.train) == per_group


def test_study_is_a_python_function_beside_the_api():
    import inspect

    import vision_transfer.studies as study_mod

    assert vt.study is study_mod.study
    src = inspect.getsource(study_mod)
    assert "from .api import" in src.split("\n\n\n")[0] or "from .api import resolve_config" in src
