"""vt rank: LogME reaches the maximum evidence, ranks informative features above noise, and the
command writes a ranked rank.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vision_transfer.cli import main
from vision_transfer.ranking.logme import logme
from tests.conftest import write_shapes_folder
from tests.test_foundation import TINY  # noqa: F401 - registers tiny_dinov2


def _evidence(f, t, alpha, beta):
    """log p(t | alpha, beta) / N of Bayesian linear regression, computed directly."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    e = beta / 2 * np.sum((t - f @ m) ** 2) + alpha / 2 * m @ m
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi) - e
            - 0.5 * np.linalg.slogdet(a)[1]) / n


@pytest.mark.parametrize("n,d", [(60, 5), (20, 30)])   # more samples than features, and fewer
def test_logme_is_the_maximum_evidence(n, d):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = (f[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    grid = np.logspace(-3, 3, 61)
    best = np.mean([max(_evidence(f, (y == k).astype(float), a, b) for a in grid for b in grid) for k in (0, 1)])
    assert logme(f, y) == pytest.approx(best, abs=2e-2) and logme(f, y) >= best - 1e-3


def test_logme_prefers_features_that_carry_the_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=150)
    good = np.eye(3)[y] + 0.3 * rng.normal(size=(150, 3))
    assert logme(np.hstack([good, rng.normal(size=(150, 13))]), y) > logme(rng.normal(size=(150, 16)), y)


def test_vt_rank_writes_a_ranked_table(tmp_path, capsys):
    root = write_shapes_folder(tmp_path / "shapes", train_per_class=6, val_per_class=1, size=32)
    rc = main(["rank", "classification", f"data.root={root}", "data.format=folder", "train.image_size=32",
               "train.device=cpu", "data.num_workers=0", f"run.out_dir={tmp_path / 'rank'}",
               "rank.backbones=[tiny_dinov2@none, tf_efficientnet_lite0@none]"])
    assert rc == 0
    res = json.loads((tmp_path / "rank" / "rank.json").read_text())["results"]
    assert [r["rank"] for r in res] == [1, 2] and res[0]["logme"] >= res[1]["logme"]
    assert {r["candidate"] for r in res} == {"tiny_dinov2@none", "tf_efficientnet_lite0@none"}
    assert all(r["images"] == 18 and r["seconds"] > 0 for r in res)
    printed = capsys.readouterr()
    assert "ranked by LogME" in printed.out + printed.err and "study.backbones=[tiny_dinov2@none" in printed.err
    assert main(["rank", "detection", f"data.root={root}"]) == 2


def test_study_backbones_axis_runs_each_strategy_per_backbone(tmp_path):
    from vision_transfer.config import load_config
    from vision_transfer.studies import cell_config, study_grid

    cfg = load_config("classification", overrides=["study.strategies=[linear_probe, scratch]", "study.seeds=1",
                                                   "study.samples_per_class=[5]",
                                                   "study.backbones=[tf_efficientnet_lite2, tiny_dinov2@none]"])
    cells = study_grid(cfg)
    assert [(c.backbone, c.strategy) for c in cells] == [("tf_efficientnet_lite2", "linear_probe"),
                                                         ("tf_efficientnet_lite2", "scratch"),
                                                         ("tiny_dinov2@none", "linear_probe"),
                                                         ("tiny_dinov2@none", "scratch")]
    lite, dino = cell_config(cfg, cells[0], tmp_path), cell_config(cfg, cells[2], tmp_path)
    assert (lite.model.backbone, lite.model.weights) == ("tf_efficientnet_lite2", "imagenet")
    assert (dino.model.backbone, dino.model.weights) == ("tiny_dinov2", None)
    assert len({c.folder for c in cells}) == len({c.key for c in cells}) == 4
