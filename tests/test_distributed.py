"""DDP under torchrun (gloo on CPU): two processes reach the metrics of one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


def _args(root, out):
    return ["train", "classification", "data.format=folder", f"data.root={root}", "model.backbone=tf_efficientnet_lite0",
            "transfer.strategy=linear_probe", "transfer.probe_solver=sgd", "train.epochs=4", "train.image_size=32", "train.batch_size=8",
            "data.num_workers=0", "run.tensorboard=false", f"run.out_dir={out}"]


@pytest.mark.skipif(shutil.which("torchrun") is None and sys.platform != "linux", reason="needs torchrun")
def test_two_process_gloo_run_matches_one_process(shapes_folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one = subprocess.run([sys.executable, "-m", "vision_transfer.cli", *_args(shapes_folder, tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "vision_transfer.cli", *_args(shapes_folder, tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    a = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert ra["accuracy"] == rb["accuracy"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4, abs=1e-6)
    import torch

    wa = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
