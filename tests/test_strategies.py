"""Transfer strategies on every task: what each one freezes (requires_grad, optimizer groups and
their learning rates, BatchNorm statistics), epoch by epoch, through plan_transfer + apply_plan
and through fit()."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

import vision_transfer as vt
from vision_transfer.engine.device import Runtime
from vision_transfer.config import TrainConfig
from vision_transfer.engine.loop import FitSettings, fit
from vision_transfer.engine.optim import build_optimizer, lr_schedule
from vision_transfer.config import TransferConfig
from vision_transfer.engine.transfer import apply_plan, param_groups, plan_transfer, train_mode
from vision_transfer.errors import VTError
from vision_transfer.task import find_backbone, get_task

TASKS = ("classification", "detection", "segmentation")
BACKBONE = "mobilenet_v3_small"   # 5 stages, ~1M parameters: fast on 2 cores


_BUILT: dict[str, nn.Module] = {}


def _model(task: str) -> nn.Module:
    """A fresh copy of the task's model (built once: building a detector costs seconds)."""
    if task not in _BUILT:
        torch.manual_seed(0)
        if task == "detection":
            _BUILT[task] = vt.build_model(task, backbone=BACKBONE, weights=None, num_classes=2, image_size=64,
                                          fpn_channels=16)
        else:
            _BUILT[task] = vt.build_model(task, backbone=BACKBONE, weights=None, num_classes=3)
    return copy.deepcopy(_BUILT[task])


def _batch(task: str):
    g = torch.Generator().manual_seed(1)
    size = 64 if task == "detection" else 32
    x = torch.randn(2, 3, size, size, generator=g)
    if task == "classification":
        return {"image": x, "label": torch.tensor([0, 2])}
    if task == "segmentation":
        return {"image": x, "mask": torch.randint(0, 3, (2, size, size), generator=g)}
    boxes = torch.tensor([[4.0, 4.0, 30.0, 30.0]])
    return ([x[0], x[1]], [{"boxes": boxes, "labels": torch.tensor([0]), "image_id": i} for i in range(2)])


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _train_step(task: str, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    train_mode(model)
    loss = get_task(task).train_step(model, _batch(task))["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


@pytest.fixture(scope="module", params=TASKS)
def task(request) -> str:
    return request.param


@pytest.mark.parametrize("strategy,kwargs,frozen", [
    ("linear_probe", {}, 5),
    ("finetune", {"freeze_layers": 2}, 2),
    ("gradual_unfreeze", {"epoch": 1, "unfreeze_every": 1}, 4),
    ("lp_ft", {"epoch": 2, "probe_epochs": 2, "freeze_layers": 1}, 1),
])
def test_strategy_freezes_exactly_its_stages_and_their_statistics(task, strategy, kwargs, frozen):
    model = _model(task)
    bb = find_backbone(model)
    n = len(bb.stages)
    kwargs = dict(kwargs)   # the parametrize dict is shared by every task
    epoch = kwargs.pop("epoch", 0)
    plan = plan_transfer(TransferConfig(strategy=strategy, bn="train", **kwargs), num_stages=n, epoch=epoch)
    assert plan.frozen_stages == frozen
    apply_plan(model, plan)
    for i, stage in enumerate(bb.stages):
        assert all(p.requires_grad == (i >= frozen) for p in stage.parameters()), (i, frozen)
    backbone_ids = {id(p) for p in bb.parameters()}
    head = [p for p in model.parameters() if id(p) not in backbone_ids]
    assert head and all(p.requires_grad for p in head)
    groups = param_groups(model, lr=1e-3, weight_decay=1e-4)
    opt = build_optimizer(groups, lr=1e-3)
    before = [_snapshot(s) for s in bb.stages]
    _train_step(task, model, opt)
    for i, stage in enumerate(bb.stages):
        after = _snapshot(stage)
        unchanged = all(torch.equal(before[i][k], after[k]) for k in after)
        assert unchanged == (i < frozen), f"stage {i} of {n} ({frozen} frozen): unchanged={unchanged}"
        if i < frozen:   # the norm layers of a frozen stage stay in eval in train mode
            assert not any(m.training for m in stage.modules() if isinstance(m, _BatchNorm))


def test_param_groups_give_one_lr_per_depth_and_cover_every_parameter(task):
    model = _model(task)
    n = len(find_backbone(model).stages)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, backbone_lr_mult=0.5, layer_lr_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == 1e-3
    for i in range(n):
        assert lrs[f"stage{i}"] == pytest.approx(1e-3 * 0.5 * 0.5 ** (n - 1 - i))
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for g in groups:   # biases and norm weights: no weight decay
        assert g["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in g["params"]) else 0.05)


@pytest.mark.parametrize("bn", ["train", "eval", "frozen"])
def test_bn_modes(task, bn):
    model = _model(task)
    bb = find_backbone(model)
    apply_plan(model, plan_transfer(TransferConfig(strategy="finetune", bn=bn), num_stages=len(bb.stages)))
    train_mode(model)
    norms = [m for m in bb.modules() if isinstance(m, _BatchNorm)]
    if bn == "frozen":
        assert not norms and any(isinstance(m, FrozenBatchNorm2d) for m in bb.modules())
    else:
        assert norms and all(m.training == (bn == "train") for m in norms)
    stats = {k: v.clone() for k, v in bb.state_dict().items() if "running" in k}
    opt = build_optimizer(param_groups(model, lr=1e-3, weight_decay=0.0), lr=1e-3)
    _train_step(task, model, opt)
    moved = any(not torch.equal(v, bb.state_dict()[k]) for k, v in stats.items())
    assert moved == (bn == "train")


def test_unfreezing_schedules_epoch_by_epoch():
    frozen = [plan_transfer(TransferConfig(strategy="gradual_unfreeze", unfreeze_every=2), num_stages=5, epoch=e).frozen_stages
              for e in range(12)]
    assert frozen == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    frozen = [plan_transfer(TransferConfig(strategy="gradual_unfreeze", unfreeze_milestones=[1, 4], freeze_layers=1), num_stages=5, epoch=e).frozen_stages for e in range(6)]
    assert frozen == [5, 4, 4, 4, 3, 3]
    floor = [plan_transfer(TransferConfig(strategy="gradual_unfreeze", freeze_layers=3), num_stages=5, epoch=e).frozen_stages
             for e in range(5)]
    assert floor == [5, 4, 3, 3, 3]
    lp_ft = [plan_transfer(TransferConfig(strategy="lp_ft", probe_epochs=2, finetune_lr_mult=0.1), num_stages=5, epoch=e)
             for e in range(4)]
    assert [p.frozen_stages for p in lp_ft] == [5, 5, 0, 0]
    assert [p.lr_scale for p in lp_ft] == [1.0, 1.0, 0.1, 0.1]
    assert [p.bn for p in lp_ft] == ["eval", "eval", "train", "train"]


def test_bad_settings_are_one_line_errors():
    from vision_transfer.config import load_config

    with pytest.raises(VTError, match="'linear_probe', 'finetune', 'gradual_unfreeze', 'lp_ft', 'lora' or 'bitfit'"):
        load_config("classification", overrides=["transfer.strategy=probe"])
    with pytest.raises(VTError, match="5 stages"):
        plan_transfer(TransferConfig(strategy="finetune", freeze_layers=6), num_stages=5)
    with pytest.raises(VTError, match="'train', 'eval' or 'frozen'"):
        load_config("classification", overrides=["transfer.bn=off"])


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i]}


def _fit_trace(monkeypatch, strategy: str, epochs: int, **transfer) -> list[dict]:
    """Per epoch (seen by a callback after it): frozen stages, stage-0 and head lrs."""
    model = _model("classification")
    bb = model.backbone
    opt_ref: list = []
    trace: list[dict] = []
    real_build = build_optimizer

    def capture(groups, **kw):
        opt_ref.append(real_build(groups, **kw))
        return opt_ref[-1]

    def cb(epoch, row):
        frozen = sum(not any(p.requires_grad for p in s.parameters()) for s in bb.stages)
        lrs = {g["name"]: g["lr"] for g in opt_ref[0].param_groups}
        trace.append({"epoch": epoch, "frozen": frozen, "head_lr": lrs["head"], "stage0_lr": lrs["stage0"]})

    import vision_transfer.engine.loop as loop

    monkeypatch.setattr(loop, "build_optimizer", capture)   # to read every group's lr
    settings = FitSettings(train=TrainConfig(epochs=epochs, batch_size=8, lr=1e-3, warmup_epochs=0, schedule="cosine"),
                           transfer=TransferConfig(strategy=strategy, **transfer), num_workers=0, tensorboard=False,
                           show_progress=False)
    fit(model, get_task("classification"), train_data=_Images(), val_data=None, classes=["a", "b", "c"],
        settings=settings, runtime=Runtime(torch.device("cpu")), callbacks=[cb])
    return trace


def test_fit_follows_gradual_unfreeze_epoch_by_epoch(monkeypatch):
    trace = _fit_trace(monkeypatch, "gradual_unfreeze", 3, unfreeze_milestones=[1, 2], layer_lr_decay=0.5)
    assert [t["frozen"] for t in trace] == [5, 4, 3]
    for t in trace:   # stage 0 is 4 steps below the top: 0.5 ** 4 of the head's lr
        assert t["stage0_lr"] == pytest.approx(t["head_lr"] * 0.5 ** 4)


def test_fit_lowers_every_lr_after_the_lp_ft_probe(monkeypatch):
    trace = _fit_trace(monkeypatch, "lp_ft", 4, probe_epochs=2, finetune_lr_mult=0.1)
    assert [t["frozen"] for t in trace] == [5, 5, 0, 0]
    # one step per epoch (8 images, batch 8), no warm-up: lr after epoch e = lr x cosine(e) x phase factor
    cosine = lr_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), total_steps=4,
                         warmup_steps=0).lr_lambdas[0]
    for t, scale in zip(trace, [1.0, 1.0, 0.1, 0.1]):
        assert t["head_lr"] == pytest.approx(1e-3 * cosine(t["epoch"]) * scale)
        assert t["stage0_lr"] == pytest.approx(t["head_lr"])
    from vision_transfer.config import load_config
    from vision_transfer.defaults import resolve_defaults

    cfg = resolve_defaults(load_config("classification", overrides=["transfer.strategy=lp_ft", "train.epochs=10"]),
                           get_task("classification"))   # probe_epochs unset: half the budget
    assert cfg.transfer.probe_epochs == 5
    assert [plan_transfer(cfg.transfer, num_stages=5, epoch=e).frozen_stages for e in (0, 4, 5, 9)] == [5, 5, 0, 0]


@pytest.mark.parametrize("kind", ["cosine", "flat_cosine", "constant"])
def test_lr_schedules_warm_up_then_follow_their_shape(kind):
    """Warm-up rises linearly to the peak; cosine decays from there to 1 % by the last step,
    flat_cosine holds the peak for 75 % of the steps first, constant never decays."""
    f = lr_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), kind=kind, total_steps=100,
                    warmup_steps=4).lr_lambdas[0]
    assert [f(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert f(4) == pytest.approx(1.0)
    expected = {"cosine": (0.5 * (1 + math.cos(math.pi * 46 / 96)) * 0.99 + 0.01, 0.01),
                "flat_cosine": (1.0, 0.01), "constant": (1.0, 1.0)}[kind]
    assert (f(50), f(100)) == pytest.approx(expected)
    assert f(75) == pytest.approx(1.0) if kind != "cosine" else f(75) < 0.5
    if kind == "flat_cosine":
        assert f(88) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 13 / 25)))
    with pytest.raises(VTError, match="train.schedule"):
        lr_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), kind="step", total_steps=10,
                    warmup_steps=0)


def test_ddp_rebuilt_when_stages_unfreeze_two_processes_match_one(shapes_folder, tmp_path):
    """Under DDP a stage unfrozen mid-run must have its gradients all-reduced too, and frozen
    norm layers must stay in eval through the wrapper: 2 gloo processes reach the weights of 1."""
    args = ["train", "classification", "data.format=folder", f"data.root={shapes_folder}",
            f"model.backbone={BACKBONE}", "model.weights=none", "transfer.strategy=gradual_unfreeze",
            "transfer.unfreeze_milestones=[1, 2]", "transfer.bn=eval", "train.epochs=3", "train.image_size=32",
            "train.batch_size=8", "train.augment=false", "data.num_workers=0", "run.tensorboard=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    runs = {"one": [sys.executable, "-m", "vision_transfer.cli"],
            "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "vision_transfer.cli"]}
    for name, cmd in runs.items():
        done = subprocess.run([*cmd, *args, f"run.out_dir={tmp_path / name}"], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    bad = [k for k in a if a[k].is_floating_point() and not torch.allclose(a[k], b[k], atol=1e-5)]
    assert not bad, bad[:5]
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
