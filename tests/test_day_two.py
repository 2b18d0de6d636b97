"""Day-two tools on tiny generated data: curves.png, the lr range test and train.lr=auto,
train.batch_size=auto, EMA weights, class weights / focal loss / balanced sampling."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vision_transfer as vt
from vision_transfer.cli import main
from vision_transfer.config import load_config
from vision_transfer.errors import VTError
from vision_transfer.data.balance import ResampledDataset, balanced, class_counts, drawn_fraction, sample_weights
from vision_transfer.engine.checkpoint import read_checkpoint
from vision_transfer.engine.curves import best_epoch, plot_curves
from vision_transfer.engine.losses import ClassificationLoss, class_weights_from_counts, focal_cross_entropy
from vision_transfer.engine.lr_find import suggest

FAST = {"train.image_size": 32, "train.batch_size": 8, "data.num_workers": 0, "run.tensorboard": False,
        "model.backbone": "tf_efficientnet_lite0"}


def _train(root, out, **overrides):
    return vt.train("classification", overrides={"data.format": "folder", "data.root": str(root),
                                                 "run.out_dir": str(out), **FAST, **overrides})


@pytest.fixture(scope="module")
def finetune_run(shapes_folder, tmp_path_factory):
    """One short fine-tune with every day-two switch on: lr=auto, batch_size=auto, EMA, class weights."""
    out = tmp_path_factory.mktemp("auto")
    run = _train(shapes_folder, out, **{"model.weights": "imagenet", "transfer.strategy": "finetune",
                                        "train.epochs": 2, "train.lr": "auto", "train.batch_size": "auto",
                                        "lr_find.num_steps": 12, "lr_find.start_lr": 1e-5, "lr_find.end_lr": 1.0,
                                        "train.ema": 0.9, "train.class_weights": "auto"})
    return run, out


def test_curves_png_is_written_and_redrawn_each_epoch(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "lr": 1e-3 * e, "accuracy": a} for e, a in ((1, 0.5), (2, 0.8), (3, 0.7))]
    assert best_epoch(rows, "accuracy") == 2 and best_epoch(rows, "train_loss") == 3
    p = plot_curves(rows[:2], tmp_path / "curves.png", monitor="accuracy")
    first = p.read_bytes()
    plot_curves(rows, p, monitor="accuracy")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.read_bytes() != first
    assert [f.name for f in tmp_path.iterdir()] == ["curves.png"]   # atomic: no temporary left


def test_a_run_folder_gets_curves_lr_find_and_the_auto_values(finetune_run):
    run, out = finetune_run
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "curves.png").is_file() and (out / "lr_find.png").is_file()
    sweep = json.loads((out / "lr_find.json").read_text())
    assert summary["lr"] == summary["auto"]["lr"]["suggestion"] == sweep["suggestion"]
    assert 1e-5 <= sweep["min_loss_lr"] <= 1.0 and math.isfinite(summary["lr"]) and summary["lr"] > 0
    assert summary["batch_size"] == summary["auto"]["batch_size"]["batch_size"] == 16   # 24 images: 2, 4, 8, 16
    cw = summary["class_weights"]
    assert cw["rule"] == "inverse" and set(cw["counts"].values()) == {8}
    assert cw["weights"] == pytest.approx({c: 1.0 for c in cw["counts"]})


def test_ema_weights_differ_from_raw_and_are_checkpointed(finetune_run):
    run, out = finetune_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ema"]["decay"] == 0.9 and "accuracy" in summary["ema"]["metrics"]
    ema = read_checkpoint(out / "checkpoints" / "ema_best.pt")
    raw = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ema["ema_decay"] == 0.9 and ema["model"].keys() == raw["model"].keys()
    assert any(not torch.equal(ema["model"][k], raw["model"][k]) for k in raw["model"]
               if raw["model"][k].is_floating_point())
    rows = [json.loads(x) for x in (out / "ema_metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    model, _ = vt.load_model(out / "checkpoints" / "ema_best.pt")   # loads like best.pt
    assert isinstance(model, torch.nn.Module)


def test_lr_find_command_suggests_a_finite_lr_inside_the_sweep(shapes_folder, tmp_path):
    rc = main(["lr-find", "classification", f"data.root={shapes_folder}", "train.image_size=32",
               "train.batch_size=8", "data.num_workers=0", "transfer.strategy=linear_probe",
               "lr_find.num_steps=30", "lr_find.start_lr=1e-4", "lr_find.end_lr=10", f"run.out_dir={tmp_path}"])
    assert rc == 0 and (tmp_path / "lr_find.png").is_file()
    res = json.loads((tmp_path / "lr_find.json").read_text())
    assert 1e-4 <= res["min_loss_lr"] <= 10 and res["suggestion"] == pytest.approx(res["min_loss_lr"] / 10)
    assert len(res["lrs"]) == len(res["smoothed"]) <= 30 and res["lrs"] == sorted(res["lrs"])


def test_suggest_picks_min_over_ten_and_the_steepest_fall():
    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
    loss = [2.0] * 8 + [2.0 - 0.2 * k for k in range(1, 9)] + [0.4 + 0.5 * k for k in range(9)]
    at10, at_min, steep = suggest(lrs, loss)
    assert at_min == lrs[15] and at10 == pytest.approx(lrs[15] / 10) and lrs[8] <= steep <= lrs[15]


def test_config_accepts_auto_and_rejects_nonsense():
    cfg = load_config("classification", overrides=["train.lr=auto", "train.batch_size=auto"])
    assert cfg.train.lr == "auto" and cfg.train.batch_size == "auto"
    with pytest.raises(VTError, match="train.lr.*number > 0 or auto"):
        load_config("classification", overrides=["train.lr=fast"])
    with pytest.raises(VTError, match="whole number >= 1 or auto"):
        load_config("classification", overrides=["train.batch_size=0"])


def test_class_weights_inverse_and_effective_number():
    inv, eff = class_weights_from_counts([300, 30]), class_weights_from_counts([300, 30], rule="effective")
    assert sum(inv) == pytest.approx(2) and sum(eff) == pytest.approx(2)
    assert inv[1] / inv[0] == pytest.approx(10, rel=1e-4) and 1 < eff[1] / eff[0] < 10   # effective number is milder
    assert class_weights_from_counts([5, 0, 5]) == [1.0, 0.0, 1.0]   # mean 1 over the classes present


def test_focal_loss_is_weighted_ce_at_gamma_zero_and_down_weights_easy_samples():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    w = torch.tensor([0.5, 1.0, 2.0])
    assert focal_cross_entropy(logits, y, gamma=0, weight=w) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)))
    easy = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert focal_cross_entropy(easy, torch.tensor([0, 1]), gamma=2) < 1e-3 * F.cross_entropy(easy, torch.tensor([0, 1]))
    seg = torch.randn(2, 3, 4, 4, generator=g)
    mask = torch.randint(0, 3, (2, 4, 4), generator=g)
    mask[0, 0] = 255
    assert focal_cross_entropy(seg, mask, gamma=0, ignore_index=255) == pytest.approx(
        float(F.cross_entropy(seg, mask, ignore_index=255)))
    with pytest.raises(VTError, match="one weight per class"):
        ClassificationLoss(num_classes=3, class_weights=[1.0, 2.0])


class _Labelled(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.targets = [{"label": c} for c in labels]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.targets[i]["label"]


def test_balanced_sampler_draws_classes_equally_and_reseeds_per_epoch():
    labels = [0] * 90 + [1] * 10
    ds = balanced(_Labelled(labels), 2, seed=0)
    assert isinstance(ds, ResampledDataset) and len(ds) == 100 and class_counts(ds.dataset, 2) == [90, 10]
    shares = []
    for epoch in range(5):
        ds.set_epoch(epoch)
        shares.append(drawn_fraction(ds, labels)[1])
    assert 0.4 < np.mean(shares) < 0.6 and len(set(shares)) > 1
    ds.set_epoch(2)
    again = ds.table.clone()
    ds.set_epoch(2)
    assert torch.equal(ds.table, again)   # seeded by (seed, epoch): a resumed run sees the same draws


def test_repeat_factor_weights_for_detection():
    class Boxes:
        targets = [{"labels": np.array([0])}] * 95 + [{"labels": np.array([0, 1])}] * 5

        def __len__(self):
            return 100
    w = sample_weights(Boxes(), 2)
    # class 1 is on 5 % of the images: r = sqrt(0.1 / 0.05) = 1.41; class 0 is everywhere: r = 1
    assert w[0] == pytest.approx(1.0) and w[-1] == pytest.approx(math.sqrt(2))


def test_focal_loss_and_balanced_sampler_train_a_probe(shapes_folder, tmp_path):
    run = _train(shapes_folder, tmp_path, **{"model.weights": "imagenet", "transfer.strategy": "linear_probe",
                                             "train.epochs": 3, "train.loss": "focal", "data.sampler": "balanced",
                                             "train.class_weights": "effective"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sampler"] == "balanced" and summary["class_weights"]["rule"] == "effective"
    assert run.metrics["accuracy"] > 1 / 3


def test_a_balanced_sampler_alone_sends_the_probe_to_epochs_and_refuses_the_solver(shapes_folder, tmp_path):
    # the solved probe fits the cached tensor in one go: a sampler would be ignored, silently
    probe = {"model.weights": "imagenet", "transfer.strategy": "linear_probe", "train.epochs": 2,
             "data.sampler": "balanced"}
    _train(shapes_folder, tmp_path / "auto", **probe)
    rows = (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "probe_layers" not in json.loads(rows[-1])   # two epochs, not one solve
    with pytest.raises(VTError, match="probe_solver=lbfgs .*data.sampler=balanced"):
        _train(shapes_folder, tmp_path / "lbfgs", **probe, **{"transfer.probe_solver": "lbfgs"})
    with pytest.raises(VTError, match="probe_solver=lbfgs fits plain cross-entropy"):
        _train(shapes_folder, tmp_path / "focal", **{**probe, "data.sampler": "random", "train.loss": "focal",
                                                     "transfer.probe_solver": "lbfgs"})


def test_segmentation_takes_focal_loss_and_auto_class_weights(tmp_path):
    from vision_transfer.tasks.segmentation.losses import SegmentationLoss

    loss = SegmentationLoss(num_classes=2, dice_weight=0.0, class_weights=[1.0, 3.0], focal_gamma=2.0)
    logits, mask = torch.zeros(1, 2, 4, 4, requires_grad=True), torch.zeros(1, 4, 4, dtype=torch.int64)
    mask[0, :1] = 1
    out = loss(logits, mask)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"])) and logits.grad is not None
