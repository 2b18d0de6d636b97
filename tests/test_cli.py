"""The `vt` command: bad input is one line on stderr and exit status 2, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vision_transfer.cli import main


def _one_line_error(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert pattern in err, err
    return err


def test_bad_input_gets_one_line(capsys, tmp_path, shapes_folder):
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["train", "classification", f"data.root={tmp_path / 'empty'}"], "no class folders")
    (tmp_path / "cls" / "a").mkdir(parents=True)
    _one_line_error(capsys, ["train", "classification", f"data.root={tmp_path / 'cls'}"], "holds no images")
    _one_line_error(capsys, ["train", "classification", f"data.root={shapes_folder}", "model.backbone=resnt18"],
                    "did you mean 'resnet18'")
    _one_line_error(capsys, ["train", "classification", "train.epoch=3"], "did you mean 'train.epochs'")
    _one_line_error(capsys, ["eval", "classification", "--checkpoint", str(tmp_path / "none.pt")], "does not exist")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    _one_line_error(capsys, ["eval", "classification", "--checkpoint", str(tmp_path / "junk.pt")],
                    "cannot read checkpoint")
    _one_line_error(capsys, ["predict", "classification", "--checkpoint", str(tmp_path / "none.pt"),
                             str(tmp_path), "--out", str(tmp_path / "o")], "does not exist")


def test_checkpoint_of_another_task_is_refused(capsys, tmp_path):
    import torch

    from vision_transfer.engine.checkpoint import FORMAT

    torch.save({"format": FORMAT, "task": "segmentation", "model": {}}, tmp_path / "seg.pt")
    _one_line_error(capsys, ["eval", "classification", "--checkpoint", str(tmp_path / "seg.pt")],
                    "is a segmentation checkpoint, not classification")


def test_backbones_json_lists_the_registry_offline_flags():
    out = subprocess.run([sys.executable, "-m", "vision_transfer.cli", "backbones", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert len(rows) >= 25
    for name in ("resnet18", "resnet50", "efficientnet_b0", "densenet121", "vgg16", "mobilenet_v3_large",
                 "convnext_tiny", "tf_efficientnet_lite0"):
        assert name in rows and {"name", "family", "weights", "offline"} <= set(rows[name])   # + licence
    assert rows["tf_efficientnet_lite0"]["offline"] is True


def test_demo_without_the_extra_names_the_pip_command(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "elpv_dataset" else real(n, *a))
    err = _one_line_error(capsys, ["demo", "--quick"], "pip install")
    assert "[demo]" in err


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "study", "embed", "similar", "cluster", "demo",
                                 "backbones"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "usage: vt " + cmd in capsys.readouterr().out


def test_demo_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    pytest.importorskip("elpv_dataset")
    from vision_transfer import demo

    monkeypatch.setattr(demo, "QUICK", demo.Budget(per_class_train=4, per_class_val=4, image_size=32, epochs=1,
                                                   probe_epochs=2, batch_size=8))
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert [r["run"] for r in report["results"]] == ["linear probe (ImageNet)", "fine-tune (ImageNet)", "from scratch"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and len(r["confusion_matrix"]) == 2 for r in report["results"])
    for f in ("demo.md", "demo.png", "linear_probe/confusion_matrix.png", "finetune/checkpoints/best.pt"):
        assert (tmp_path / "demo" / f).is_file(), f
