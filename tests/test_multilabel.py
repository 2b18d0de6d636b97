"""Multi-label classification from a CSV (data.multilabel=true): generated images holding a red
square, a green disc, both or neither; a probe and a fine-tune learn them, mAP picks the best epoch,
eval reproduces the summary, predict writes per-class scores, bad CSVs stop with one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vision_transfer as vt
from vision_transfer.data.folders import read_multilabel_csv
from vision_transfer.data.synthetic import COLOURS, _shape_mask
from vision_transfer.errors import VTError

FAST = {"train.batch_size": 8, "data.num_workers": 0, "run.tensorboard": False,
        "model.backbone": "tf_efficientnet_lite0", "model.weights": "imagenet"}
CLASSES = ["disc", "square"]


def _image(square: bool, disc: bool, rng, size: int = 48) -> np.ndarray:
    img = rng.normal(110, 12, (size, size, 3))
    for present, kind, cx in ((square, 0, size * 0.28), (disc, 1, size * 0.72)):
        if present:
            m = _shape_mask(kind, cx + rng.uniform(-2, 2), size * 0.5 + rng.uniform(-6, 6), size * 0.17, size)
            img[m] = COLOURS[kind] + rng.normal(0, 10, (m.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_multilabel_csvs(root, *, per_combo: dict[str, int], seed: int = 0):
    """`root/images/*.png`, `root/train.csv` (path,labels with 'a;b') and `root/val.csv`."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, n in per_combo.items():
        lines = ["path,labels"]
        for i in range(4 * n):
            square, disc = bool(i % 2), bool((i // 2) % 2)
            name = f"images/{split}_{i:03d}.png"
            Image.fromarray(_image(square, disc, rng)).save(root / name)
            labels = [c for c, on in (("square", square), ("disc", disc)) if on]
            lines.append(f"{name},{';'.join(labels)}")
            truth[name] = labels
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    truth = write_multilabel_csvs(root, per_combo={"train": 6, "val": 3})
    return root, truth


@pytest.fixture(scope="module")
def probe_run(data, tmp_path_factory):
    root, _ = data
    out = tmp_path_factory.mktemp("ml-probe")
    run = vt.train("classification", overrides={
        **FAST, "data.format": "csv", "data.multilabel": True, "data.train.annotations": str(root / "train.csv"),
        "data.val.annotations": str(root / "val.csv"), "transfer.strategy": "linear_probe",
        "train.image_size": 48, "train.epochs": 25, "train.lr": 0.05, "run.out_dir": str(out)})
    return run, out


def test_a_probe_learns_two_labels_and_monitors_map(probe_run):
    run, out = probe_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["monitor"] == "map" and summary["classes"] == CLASSES
    assert run.metrics["map"] >= 0.9   # chance: the share of positives, 0.5
    assert {"map", "macro_f1", "subset_accuracy", "per_class", "loss"} <= set(run.metrics)
    assert {"ap", "precision", "recall", "f1", "support"} <= set(run.metrics["per_class"]["disc"])
    assert run.metrics["per_class"]["disc"]["support"] == 6   # 12 val images, half with a disc
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 25 and run.best_epoch == max(rows, key=lambda r: r["map"])["epoch"]
    spec = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["model_spec"]
    assert spec["options"]["multilabel"] is True
    assert (out / "curves.png").is_file()


def test_eval_reproduces_the_summary_and_predict_writes_scores(probe_run, data, tmp_path):
    run, out = probe_run
    root, truth = data
    metrics = vt.evaluate("classification", checkpoint=out / "checkpoints" / "best.pt",
                          overrides={"data.num_workers": 0}, out=tmp_path / "ev")
    summary = json.loads((out / "summary.json").read_text())
    assert metrics["map"] == pytest.approx(summary["metrics"]["map"], abs=1e-9)
    assert metrics["macro_f1"] == pytest.approx(summary["metrics"]["macro_f1"], abs=1e-9)
    assert (tmp_path / "ev" / "report.md").is_file()
    val = [p for p in sorted(truth) if p.startswith("images/val")]
    rows = vt.predict("classification", checkpoint=out / "checkpoints" / "best.pt",
                      inputs=[str(root / p) for p in val], out=tmp_path / "pred", score_threshold=0.5)
    saved = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(saved) == len(val) == len(rows)
    assert set(saved[0]["scores"]) == set(CLASSES) and saved[0]["threshold"] == 0.5
    for r in saved:
        assert sorted(r["labels"]) == sorted(c for c, s in r["scores"].items() if s >= 0.5)
    exact = sum(sorted(r["labels"]) == sorted(truth[p]) for r, p in zip(saved, val)) / len(val)
    assert exact == pytest.approx(summary["metrics"]["subset_accuracy"], abs=1e-9)


def test_a_finetune_trains_from_class_columns_with_a_held_out_split(data, tmp_path):
    """The other layout (one 0/1 column per class), no val CSV (data.val_split), images trained end to end."""
    root, truth = data
    lines = ["file,square,disc"] + [f"{p},{int('square' in t)},{int('disc' in t)}" for p, t in sorted(truth.items())]
    (root / "columns.csv").write_text("\n".join(lines) + "\n")
    run = vt.train("classification", overrides={
        **FAST, "data.format": "csv", "data.multilabel": True, "data.train.annotations": str(root / "columns.csv"),
        "data.val_split": 0.25, "transfer.strategy": "finetune", "train.image_size": 32, "train.epochs": 1,
        "run.out_dir": str(tmp_path / "ft")})
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["classes"] == ["square", "disc"] and summary["num_val"] == 9 and summary["num_train"] == 27
    assert 0.0 <= run.metrics["map"] <= 1.0 and np.isfinite(summary["metrics"]["loss"])


def test_map_and_f1_match_hand_counts():
    from sklearn.metrics import average_precision_score, f1_score

    from tasks.classification.metrics import multilabel_metrics

    rng = np.random.default_rng(0)
    y = (rng.random((40, 3)) < 0.4).astype(np.float32)
    logits = torch.from_numpy(rng.normal(0, 1, (40, 3)) + 2 * (y - 0.5)).float()
    logits[:5, 0] = 0.0   # ties
    m = multilabel_metrics(logits, torch.from_numpy(y), ["a", "b", "c"])
    probs = logits.sigmoid().numpy()
    assert m["map"] == pytest.approx(np.mean([average_precision_score(y[:, i], probs[:, i]) for i in range(3)]))
    assert m["macro_f1"] == pytest.approx(f1_score(y, probs >= 0.5, average="macro"))
    assert m["per_class"]["b"]["f1"] == pytest.approx(f1_score(y[:, 1], probs[:, 1] >= 0.5))


@pytest.mark.parametrize("csv_text, classes, message", [
    ("image_name,labels\nimages/train_000.png,disc\n", None, "must name a path column"),
    ("path,labels\nimages/nope.png,disc\n", None, "not found under"),
    ("path,labels\nimages/train_000.png,disc;cat\n", ["disc", "square"], "label 'cat' is not in data.classes"),
    ("path,labels\n../outside.png,disc\n", None, "escapes its root"),
    ("path,square,disc\nimages/train_000.png,1,2\n", None, "class columns hold 0 or 1"),
    ("path,square,disc\nimages/train_000.png,1,0\n", ["square", "cat"], "has no column"),
    ("path\nimages/train_000.png\n", None, "no label columns"),
])
def test_bad_csvs_stop_with_one_line(data, tmp_path, csv_text, classes, message):
    root, _ = data
    (root.parent / "outside.png").write_bytes((root / "images" / "train_000.png").read_bytes())
    path = root / "bad.csv"
    path.write_text(csv_text)
    with pytest.raises(VTError, match=message) as e:
        read_multilabel_csv(path, classes=classes)
    assert "\n" not in str(e.value)


def test_single_label_keys_and_other_formats_are_refused(data, tmp_path):
    root, _ = data
    base = {**FAST, "data.multilabel": True, "train.image_size": 32, "train.epochs": 1,
            "run.out_dir": str(tmp_path / "x")}
    with pytest.raises(VTError, match="train.class_weights"):
        vt.train("classification", overrides={**base, "data.format": "csv", "train.class_weights": "auto",
                                              "data.train.annotations": str(root / "train.csv")})
    with pytest.raises(VTError, match="reads a CSV"):
        vt.train("classification", overrides={**base, "data.format": "folder", "data.root": str(root)})
    with pytest.raises(VTError, match="not to the segmentation task"):
        vt.train("segmentation", overrides={**base, "data.root": str(root)})


def test_doctor_counts_labels_per_class(data, tmp_path):
    from vision_transfer.config import load_config
    from vision_transfer.doctor import run_doctor

    root, _ = data
    cfg = load_config("classification", overrides=[
        "data.format=csv", "data.multilabel=true", f"data.train.annotations={root / 'train.csv'}",
        f"data.val.annotations={root / 'val.csv'}", "train.image_size=32"])
    result = run_doctor(cfg, out=tmp_path / "doc")
    assert result["splits"]["train"]["per_class"] == {"disc": 12, "square": 12}
    assert result["splits"]["val"]["images"] == 12
