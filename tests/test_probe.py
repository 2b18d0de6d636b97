"""The linear probe solved to the optimum (L-BFGS) and on chosen stages (`transfer.probe_layers`)."""
from __future__ import annotations

import json
import os

import pytest
import torch

import vision_transfer as vt
from vision_transfer.engine.checkpoint import load_model
from vision_transfer.errors import VTError
from vision_transfer.tasks.classification.features import cache_key, stage_columns
from vision_transfer.tasks.classification.heads import StagePooledHead
from vision_transfer.tasks.classification.probe import layer_candidates, layer_sets
from vision_transfer.tasks.classification.solver import Standardiser, fit_softmax, objective, solve_probe

FAST = {"train.image_size": 32, "train.batch_size": 8, "data.num_workers": 0, "run.tensorboard": False,
        "model.weights": "imagenet", "transfer.strategy": "linear_probe"}


def _blobs(n: int, d: int = 40, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=g) * 3 + 5   # off-centre and scaled: standardising matters
    x[:, :k] += 2.0 * torch.nn.functional.one_hot(y, k)
    return x, y


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_lbfgs_reaches_the_optimum_scikit_learn_finds(C):
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs(90)
    xs = Standardiser.fit(x.double())(x.double())
    w, b, _ = fit_softmax(xs, y, num_classes=3, C=C)
    sk = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(xs.numpy(), y.numpy())
    ws, bs = torch.tensor(sk.coef_), torch.tensor(sk.intercept_)
    # two classes: scikit-learn's one weight vector is our w1 - w0 at the same C
    x2, y2 = _blobs(60, k=2)
    xs2 = Standardiser.fit(x2.double())(x2.double())
    w2, _, _ = fit_softmax(xs2, y2, num_classes=2, C=C)
    sk2 = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(xs2.numpy(), y2.numpy())
    assert torch.allclose(w2[1] - w2[0], torch.tensor(sk2.coef_[0]), atol=1e-4)

    def obj(w, b):  # scikit-learn's objective divided by C n
        return float(torch.nn.functional.cross_entropy(xs @ w.T + b, y) + 0.5 / (C * len(y)) * (w * w).sum())

    assert obj(w, b) == pytest.approx(obj(ws, bs), rel=1e-7, abs=1e-9)
    assert torch.equal((xs @ w.T + b).argmax(1), torch.as_tensor(sk.predict(xs.numpy())))
    # the un-standardised solution acts on raw features and has the same objective
    fit = solve_probe(x, y, num_classes=3, C=C)
    assert objective(fit.weight, fit.bias, x, y, C=C) == pytest.approx(obj(ws, bs), rel=1e-6)


def test_C_is_chosen_on_val_and_by_cv_without_val():
    x, y = _blobs(60, seed=1)
    vx, vy = _blobs(60, seed=2)
    fit = solve_probe(x, y, vx, vy, num_classes=3)
    assert fit.selection == "val"
    best = max(fit.scores, key=lambda s: (s["accuracy"], -s["log_loss"]))
    assert fit.C == best["C"] and fit.best["accuracy"] == best["accuracy"]
    acc = ((vx @ fit.weight.float().T + fit.bias.float()).argmax(1) == vy).float().mean().item()
    assert acc == pytest.approx(best["accuracy"])
    cv = solve_probe(x, y, num_classes=3)
    assert cv.selection == "cv:5" and cv.C in [s["C"] for s in cv.scores]
    assert solve_probe(x[:3], y[:3], num_classes=3).selection == "default"   # one image per class


def test_probe_layer_specs():
    assert layer_sets("last", 5) == [[4]] and layer_sets("all", 5) == [[0, 1, 2, 3, 4]]
    assert layer_sets([-1, 2, 3], 5) == [[2, 3, 4]] and layer_sets("auto", 5) == layer_candidates(5)
    assert layer_candidates(5)[0] == [4]
    with pytest.raises(VTError, match="stages 0..4"):
        layer_sets([5], 5)
    with pytest.raises(VTError, match="last, all, auto"):
        layer_sets("deep", 5)
    assert stage_columns([2, 3, 4], [0, 2]) == [0, 1, 5, 6, 7, 8]


def test_cache_key_hashes_non_utf8_file_names(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")   # not UTF-8: Python keeps it as a surrogate escape
    try:
        (tmp_path / name).write_bytes(b"x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    key = cache_key(backbone="b", weights=None, preprocessing={}, image_size=32, paths=[tmp_path / name],
                    stages=[0, 1])
    assert len(key) == 32 and key != cache_key(backbone="b", weights=None, preprocessing={}, image_size=32,
                                               paths=[tmp_path / name], stages=[1])


@pytest.fixture(scope="module")
def all_layers_run(shapes_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-all")
    run = vt.train("classification", overrides={"data.format": "folder", "data.root": str(shapes_folder),
                                                "run.out_dir": str(out), **FAST, "transfer.probe_layers": "all"})
    return run, out


def test_solved_probe_on_all_stages_round_trips_through_the_checkpoint(all_layers_run, shapes_folder, tmp_path):
    run, out = all_layers_run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["solver"] == "lbfgs" and rows[0]["probe_layers"] == [0, 1, 2, 3, 4]
    model, meta = load_model(out / "checkpoints" / "best.pt")
    assert isinstance(model.head, StagePooledHead) and meta["model_spec"]["options"]["probe_layers"] == [0, 1, 2, 3, 4]
    linear = model.head.classifier[-1]
    assert linear.in_features == sum(f.channels for f in model.backbone.stage_info)
    metrics = vt.evaluate("classification", checkpoint=out / "checkpoints" / "best.pt",
                          overrides={"data.num_workers": 0}, out=tmp_path / "ev")
    assert metrics["accuracy"] == pytest.approx(run.metrics["accuracy"]) and run.metrics["accuracy"] >= 0.9
    preds = vt.predict("classification", checkpoint=out / "checkpoints" / "best.pt",
                       inputs=[str(shapes_folder / "val")], out=tmp_path / "pred")
    correct = sum(r["label"] == r["image"].split("/")[-2] for r in preds)
    assert correct / len(preds) == pytest.approx(run.metrics["accuracy"])


def test_auto_picks_the_best_stage_set_and_sgd_still_trains(shapes_folder, tmp_path):
    common = {"data.format": "folder", "data.root": str(shapes_folder), **FAST}
    vt.train("classification", overrides={**common, "run.out_dir": str(tmp_path / "auto"),
                                          "transfer.probe_layers": "auto"})
    probe = json.loads((tmp_path / "auto" / "probe.json").read_text())
    assert [t["probe_layers"] for t in probe["tried"]] == layer_candidates(5)
    best = max(probe["tried"], key=lambda t: (t["accuracy"], -t["log_loss"]))
    assert probe["probe_layers"] == best["probe_layers"]
    run = vt.train("classification", overrides={**common, "run.out_dir": str(tmp_path / "sgd"), "train.epochs": 3,
                                                "transfer.probe_solver": "sgd", "transfer.probe_layers": [3, 4]})
    rows = (tmp_path / "sgd" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and "solver" not in json.loads(rows[0])
    model, meta = load_model(tmp_path / "sgd" / "checkpoints" / "best.pt")
    assert model.head.stages == (3, 4) and meta["model_spec"]["options"]["probe_layers"] == [3, 4]
    x = torch.randn(2, 3, 32, 32)
    ref = run.model.cpu().eval()
    ref.load_state_dict(torch.load(tmp_path / "sgd" / "checkpoints" / "best.pt", weights_only=True)["model"])
    with torch.inference_mode():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
    with pytest.raises(VTError, match="lbfgs solves a linear head"):
        vt.train("classification", overrides={**common, "run.out_dir": str(tmp_path / "mlp"), "model.head": "mlp",
                                              "transfer.probe_solver": "lbfgs"})


def test_embed_with_layers_gives_unit_vectors_of_the_stages_width(shapes_folder):
    from vision_transfer.similarity.embedding import embed, load_embedding_model

    paths = sorted((shapes_folder / "val").rglob("*.png"))[:3]
    model = load_embedding_model(backbone="tf_efficientnet_lite0", weights="imagenet", image_size=32,
                                 device="cpu", layers="3,4")
    vectors, kept = embed(paths, model=model, progress=False)
    assert vectors.shape == (3, 112 + 1280) and model.identity["layers"] == [3, 4] and len(kept) == 3
    assert abs(float((vectors ** 2).sum(1).max()) - 1.0) < 1e-5
    last = load_embedding_model(backbone="tf_efficientnet_lite0", weights="imagenet", image_size=32, device="cpu")
    assert "layers" not in last.identity and embed(paths, model=last, progress=False)[0].shape == (3, 1280)


def test_study_probe_layers_axis(shapes_folder, tmp_path):
    from vision_transfer.cli import main

    code = main(["study", "classification", "train.image_size=32", "train.batch_size=8", "data.num_workers=0",
                 f"data.root={shapes_folder}", f"run.out_dir={tmp_path}", "study.strategies=[]",
                 "study.samples_per_class=[4]", "study.seeds=1", "study.probe_layers=[3, last, all]"])
    assert code == 0
    data = json.loads((tmp_path / "study.json").read_text())
    assert [(r["axis"], r["probe_layers"]) for r in data["rows"]] == \
        [("probe_layers", "3"), ("probe_layers", "last"), ("probe_layers", "all")]
    probe = json.loads((tmp_path / "runs" / "layers3" / "spc4" / "seed0" / "probe.json").read_text())
    assert probe["probe_layers"] == [3] and probe["selection"].startswith("cv")   # never C chosen on val here
    assert (tmp_path / "study_probe_layers.png").is_file() and "probed" in (tmp_path / "study.md").read_text()
