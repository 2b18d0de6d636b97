"""Registry and config: clear errors that name the valid choices."""
from __future__ import annotations

import pytest

from vision_transfer.config import load_config, parse_overrides, valid_keys
from vision_transfer.errors import VTError
from vision_transfer.registry import Registry


def test_registry_duplicate_and_unknown_names():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    def alpha(): ...

    with pytest.raises(VTError, match="already registered"):
        reg.add("alpha", alpha)
    with pytest.raises(VTError, match="did you mean 'alpha'"):
        reg.get("alpah")
    reg.add("beta", alpha)
    assert reg.list() == ["alpha", "beta"] and reg.list("al*") == ["alpha"] and reg.list("et") == ["beta"]


def test_overrides_are_yaml_values():
    tree = parse_overrides(["train.epochs=5", "data.classes=[background, nucleus]", "model.weights=none",
                            "train.lr=3e-4"])
    assert tree["train"]["epochs"] == 5 and tree["data"]["classes"] == ["background", "nucleus"]
    import os

    assert load_config("classification", overrides=["data.root=~/cells"]).data.root == os.path.expanduser("~/cells")
    cfg = load_config("classification", overrides=["train.epochs=5", "train.lr=3e-4", "model.weights=none"])
    assert cfg.train.epochs == 5 and cfg.train.lr == pytest.approx(3e-4) and cfg.model.weights == "none"


def test_config_key_typo_names_the_right_key():
    with pytest.raises(VTError, match=r"unknown config key 'train.epoch'.*'train.epochs'"):
        load_config("classification", overrides=["train.epoch=3"])
    with pytest.raises(VTError, match="transfer.strategy"):
        load_config("classification", overrides=["transfer.strategy=probe"])
    with pytest.raises(VTError, match="not key=value"):
        load_config("classification", overrides=["train.epochs"])


def test_yaml_recipe_merges_under_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 7\n  batch_size: 4\nmodel:\n  backbone: resnet18\n")
    cfg = load_config("detection", path=recipe, overrides=["train.epochs=2"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.backbone) == (2, 4, "resnet18")
    recipe.write_text("- not a mapping\n")
    with pytest.raises(VTError, match="mapping"):
        load_config("detection", path=recipe)


def test_every_design_key_is_accepted():
    design = ["data.format", "data.root", "data.train.images", "data.train.annotations", "data.train.masks",
              "data.val.images", "data.val.annotations", "data.val.masks", "data.classes", "data.val_split",
              "model.backbone", "model.weights", "model.head", "transfer.strategy", "transfer.freeze_layers",
              "transfer.cache_features", "transfer.backbone_lr_mult", "train.epochs", "train.batch_size", "train.lr",
              "train.image_size", "train.device", "train.seed", "train.resume", "run.out_dir", "study.strategies",
              "study.samples_per_class", "study.seeds"]
    assert not set(design) - set(valid_keys())


def test_every_shipped_recipe_validates():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert {p.parent.name for p in recipes} == {"classification", "detection", "segmentation"}
    for p in recipes:
        load_config(p.parent.name, path=p)


def test_task_defaults_fill_only_what_the_config_leaves_unset():
    """Every None-means-default setting: the config's value where given, else the task's."""
    from vision_transfer.defaults import resolve_defaults
    from vision_transfer.task import get_task

    def opt(cfg):
        return {"lr": cfg.train.lr, "schedule": cfg.train.schedule, "backbone_lr_mult": cfg.transfer.backbone_lr_mult}

    seg, cls = get_task("segmentation"), get_task("classification")
    assert opt(resolve_defaults(load_config("segmentation"), seg)) == \
        {"lr": 2e-3, "schedule": "constant", "backbone_lr_mult": 0.5}
    c = resolve_defaults(load_config("classification"), cls)
    assert opt(c) == {"lr": 1e-3, "schedule": "cosine", "backbone_lr_mult": 1.0}
    assert (c.train.image_size, c.model.head, c.data.color_jitter, c.transfer.cache_features) == (224, "linear", 0.2, False)
    probe = resolve_defaults(load_config("classification", overrides=["transfer.strategy=linear_probe"]), cls)
    assert (probe.train.lr, probe.transfer.cache_features, probe.transfer.probe_epochs) == (1e-2, True, None)
    given = load_config("segmentation", overrides=["train.lr=0.01", "train.schedule=cosine",
                                                   "transfer.backbone_lr_mult=0"])
    assert opt(resolve_defaults(given, seg)) == {"lr": 0.01, "schedule": "cosine", "backbone_lr_mult": 0.0}
    assert resolve_defaults(resolve_defaults(given, seg), seg) == resolve_defaults(given, seg)   # idempotent
    with pytest.raises(VTError, match="train.schedule"):
        load_config("segmentation", overrides=["train.schedule=step"])
