"""write_report: metrics.json, report.md, report.html and the confusion-matrix plot."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from vision_transfer.evaluation.report import per_class_table, print_metrics_table, write_report

CLASSES = ["cat", "dog", "bird|x"]
CM = np.array([[8, 1, 1], [2, 7, 1], [0, 0, 10]])


def classification_metrics():
    return {"accuracy": np.float64(25 / 30), "top5_accuracy": 1.0, "macro_f1": 0.83,
            "per_class": {"cat": {"precision": 0.8, "recall": 0.8, "f1": 0.8},
                          "dog": {"precision": 0.875, "recall": 0.7, "f1": 0.7778},
                          "bird|x": {"precision": 0.8333, "recall": 1.0, "f1": 0.9091}},
            "confusion_matrix": CM.tolist()}


def test_write_report_with_confusion_matrix(tmp_path):
    files = write_report(tmp_path / "eval", task="classification", metrics=classification_metrics(),
                         classes=CLASSES, confusion_matrix=CM, details={"checkpoint": "best.pt"})
    out = tmp_path / "eval"
    assert set(files) == {"metrics", "markdown", "html", "confusion_matrix"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(25 / 30) and metrics["confusion_matrix"] == CM.tolist()
    png = (out / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    html = (out / "report.html").read_text()
    assert base64.b64encode(png).decode() in html  # inlined: the HTML is self-contained
    assert "<td>bird|x</td>" in html and "0.8750" in html
    md = (out / "report.md").read_text()
    assert "| class | precision | recall | f1 |" in md and "| bird\\|x | 0.8333 | 1.0000 | 0.9091 |" in md
    assert "![confusion matrix](confusion_matrix.png)" in md and "checkpoint: best.pt" in md
    assert not list(out.glob("*.tmp"))


def test_confusion_matrix_taken_from_metrics_and_metrics_json_optional(tmp_path):
    files = write_report(tmp_path, task="classification", metrics=classification_metrics(), classes=CLASSES,
                         write_metrics=False)
    assert "confusion_matrix" in files and not (tmp_path / "metrics.json").exists()


def test_segmentation_per_class_list_and_detection_curves(tmp_path):
    metrics = {"mIoU": 0.5, "mDice": 0.6, "pixel_accuracy": 0.9, "per_class_IoU": [0.9, 0.1, float("nan")]}
    write_report(tmp_path / "seg", task="segmentation", metrics=metrics, classes=["bg", "cell", "rare"])
    assert json.loads((tmp_path / "seg" / "metrics.json").read_text())["per_class_IoU"][2] is None
    md = (tmp_path / "seg" / "report.md").read_text()
    assert "| cell | 0.1000 |" in md and "| rare | n/a |" in md
    r = [i / 100 for i in range(101)]
    curves = {"a": {"IoU=0.50": (r, [1.0] * 101)}, "b": {"IoU=0.50": (r, [0.5] * 50 + [-1] * 51)}}
    write_report(tmp_path / "det", task="detection", metrics={"AP": 0.7, "APs": -1, "per_class_AP": {"a": 1, "b": -1}},
                 classes=None, pr_curves=curves)
    html = (tmp_path / "det" / "report.html").read_text()
    assert html.count("<svg") == 3 and "mean of 2 classes" in html and ">n/a<" in html


def test_bad_confusion_matrix(tmp_path):
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        write_report(tmp_path, task="classification", metrics={}, classes=CLASSES, confusion_matrix=[[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="needs `classes`"):
        write_report(tmp_path, task="classification", metrics={}, classes=None, confusion_matrix=CM)


def test_per_class_table_and_rich_print(capsys):
    header, rows = per_class_table({"per_class_AP": {"a": 0.5}, "per_class": {"b": {"f1": 0.2}}}, ["z"])
    assert header == ["class", "AP", "f1"] and rows == [["z", None, None], ["a", 0.5, None], ["b", None, 0.2]]
    print_metrics_table(classification_metrics(), title="val [best]", classes=CLASSES)
    out = capsys.readouterr().out
    assert "val [best]" in out and "0.8333" in out and "bird|x" in out
