"""Faults on the long commands: SIGTERM mid-epoch (step-boundary checkpoint, exit 143, exact resume),
kill -9 during a checkpoint write, a NaN loss, a full disk, a dead loader worker, SIGTERM in
`vt embed` and `vt study`. Tiny runs: 12 images of 24 px at 32 px, batch 4 (3 steps an epoch),
two epochs of an 82k-parameter network."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import badfiles as bf
from test_bad_inputs import vt
from vision_transfer.tasks.classification import Classification

ARGS = ["model.backbone=timm/test_efficientnet", "model.weights=none", "train.image_size=32", "train.epochs=2",
        "train.batch_size=4", "data.num_workers=0", "run.tensorboard=false", "data.val_split=0"]


def train(data: Path, run: Path, *extra: str):
    return vt("train", "classification", f"data.root={data}", f"run.out_dir={run}", *ARGS, *extra)


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return bf.class_folder(tmp_path_factory.mktemp("faults") / "data", per_class=6)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("reference")
    assert train(data, run).rc == 0
    return weights(run)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _on_call(monkeypatch, n: int, action) -> None:
    """Run `action(loss)` in the n-th training step (1-based, counted over the whole run)."""
    calls = {"n": 0}
    real = Classification.train_step

    def step(self, model, batch):
        out = real(self, model, batch)
        calls["n"] += 1
        return action(out) if calls["n"] == n or (n < 0 and calls["n"] >= -n) else out
    monkeypatch.setattr(Classification, "train_step", step)


def test_sigterm_mid_epoch_saves_the_step_and_resume_is_bit_identical(data, reference, tmp_path, monkeypatch):
    run = tmp_path / "run"

    def term(out):
        os.kill(os.getpid(), signal.SIGTERM)   # lands mid-step; the loop stops at the step's end
        return out
    _on_call(monkeypatch, 5, term)            # epoch 2, step 2 of 3
    res = train(data, run)
    assert res.rc == 143, res.err
    line = [ln for ln in res.err.splitlines() if ln.startswith("vt train:")]
    assert line == [f"vt train: stopped by SIGTERM at epoch 2, step 2; saved {run}/checkpoints/last.pt at the step "
                    "boundary: rerun with train.resume=auto"]
    state = weights(run)
    assert (state["epoch"], state["step"]) == (1, 2) and "Traceback" not in res.err
    assert not list((run / "checkpoints").glob("*.tmp"))
    monkeypatch.undo()
    res = train(data, run, "train.resume=auto")
    assert res.rc == 0, res.err
    assert "after epoch 1, step 2" in res.err
    assert _same_weights(weights(run)["model"], reference["model"])
    assert [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_ctrl_c_exits_130(data, tmp_path, monkeypatch):
    def interrupt(out):
        os.kill(os.getpid(), signal.SIGINT)
        return out
    _on_call(monkeypatch, 2, interrupt)
    res = train(data, tmp_path / "run")
    assert res.rc == 130 and "stopped by SIGINT at epoch 1, step 2" in res.err
    assert weights(tmp_path / "run")["step"] == 2


KILL_DURING_WRITE = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})         # the reference's threads: bit-identical sums
real, calls = torch.save, []
def save(obj, f, *a, **k):
    calls.append(1)
    if len(calls) == 3:                  # epoch 2's last.pt: half the bytes, then kill -9
        import io
        buf = io.BytesIO(); real(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
from test_faults import ARGS
from vision_transfer.cli import main
main(["train", "classification", "data.root={data}", "run.out_dir={run}", *ARGS])
"""


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_and_resume_picks_it(data, reference, tmp_path):
    run = tmp_path / "run"
    script = KILL_DURING_WRITE.format(tests=str(Path(__file__).parent), data=data, run=run,
                                      threads=torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert weights(run)["epoch"] == 1                                    # the previous last.pt still loads
    assert len(list((run / "checkpoints").glob("last.pt.*.tmp"))) == 1   # the cut temporary, never renamed
    res = train(data, run, "train.resume=auto")
    assert res.rc == 0, res.err
    assert _same_weights(weights(run)["model"], reference["model"])
    assert not list((run / "checkpoints").glob("*.tmp"))                 # the next write swept it


def test_nan_loss_stops_naming_epoch_and_steps_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    _on_call(monkeypatch, -4, lambda out: {"loss": out["loss"] * float("nan")})   # from epoch 2, step 1
    res = train(data, tmp_path / "run")
    assert res.rc == 2 and "Traceback" not in res.err
    assert "the loss became nan at epoch 2, between steps 1 and 3" in res.err and "lower train.lr" in res.err
    assert weights(tmp_path / "run")["epoch"] == 1


def test_disk_full_is_one_line_and_leaves_the_previous_checkpoint(data, tmp_path, monkeypatch):
    real, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    res = train(data, run)
    assert res.rc == 2 and "Traceback" not in res.err
    assert f"no space left on the device while writing {run}/checkpoints/last.pt" in res.err
    monkeypatch.undo()
    assert weights(run)["epoch"] == 1 and not list((run / "checkpoints").glob("*.tmp"))


def test_a_dead_loader_worker_is_a_clear_error_not_a_hang(data, tmp_path, monkeypatch):
    from torch.utils.data import get_worker_info

    from vision_transfer.data.dataset import ImageDataset

    real = ImageDataset.load

    def load(self, i):
        if get_worker_info() is not None:
            os._exit(3)   # what the OOM killer does to a worker
        return real(self, i)
    monkeypatch.setattr(ImageDataset, "load", load)
    res = train(data, tmp_path / "run", "data.num_workers=1")
    assert res.rc == 2 and "Traceback" not in res.err
    assert "a data loader worker died" in res.err and "data.num_workers=0" in res.err


def test_sigterm_in_embed_exits_143(data, tmp_path, monkeypatch):
    from vision_transfer.similarity import embedding

    real = embedding._batches

    def batches(*a, **k):
        for i, b in enumerate(real(*a, **k)):
            if i == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield b
    monkeypatch.setattr(embedding, "_batches", batches)
    res = vt("embed", data, "--backbone", "timm/test_efficientnet", "--weights", "none", "--image-size", "32",
             "--batch-size", "4", "--out", tmp_path / "index")
    assert res.rc == 143 and "vt embed: stopped by SIGTERM; nothing was written" in res.err
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())


def test_sigterm_in_study_exits_143_and_a_rerun_continues(data, tmp_path, monkeypatch):
    def term(out):
        os.kill(os.getpid(), signal.SIGTERM)
        return out
    _on_call(monkeypatch, 2, term)
    study = ["study", "classification", f"data.root={data}", f"run.out_dir={tmp_path / 's'}", *ARGS, "train.epochs=1",
             "study.strategies=[finetune]", "study.samples_per_class=[4]", "study.seeds=1", "data.val_split=0.34"]
    res = vt(*study)
    assert res.rc == 143 and "rerun the same command to continue" in res.err
    monkeypatch.undo()
    res = vt(*study)
    assert res.rc == 0, res.err
    assert len((tmp_path / "s" / "rows.jsonl").read_text().splitlines()) == 1
