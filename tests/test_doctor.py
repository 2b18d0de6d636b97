"""`vt doctor`: finds every problem the bad-input corpus plants when they sit in one dataset, and
nothing on a clean one (exit 1 and 0)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import badfiles as bf
from test_bad_inputs import vt


def _kinds(out) -> dict[str, str]:
    return {f["kind"]: f["severity"] for f in json.loads((out / "doctor.json").read_text())["findings"]}


def test_doctor_finds_every_planted_image_problem(tmp_path):
    data = tmp_path / "data"
    bf.class_folder(data / "train", per_class=16, size=48, classes=("square",))
    bf.class_folder(data / "train", per_class=4, size=48, classes=("disc",), seed=2)        # imbalance 16 : 4 (+ odd)
    bf.class_folder(data / "val", per_class=3, size=48, seed=1)
    sq = data / "train" / "square"
    bf.zero_byte(sq / "zero.png"), bf.truncated_jpeg(sq / "cut.jpg"), bf.not_an_image(sq / "text.jpg")
    bf.bomb_png(sq / "bomb.png"), bf.cmyk_jpeg(sq / "cmyk.jpg"), bf.one_pixel(sq / "one.png")
    bf.exif_rotated_jpeg(sq / "turned.jpg", bf._pixels(7, 48))
    shutil.copy(sq / "square_0.png", sq / "copy.png")                                       # exact duplicate
    a = np.asarray(Image.open(sq / "square_1.png")).astype(np.int16) + 3
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(sq / "brighter.png")              # near duplicate
    shutil.copy(sq / "square_2.png", data / "val" / "square" / "leak.png")                  # train/val leakage
    out = tmp_path / "doc"
    res = vt("doctor", "classification", f"data.root={data}", "--out", out)
    assert res.rc == 1, res.err
    kinds = _kinds(out)
    expected = {"skipped_zero-byte": "error", "skipped_truncated": "error", "skipped_not-an-image": "error",
                "skipped_too-large": "error", "leakage": "error", "mode": "warning", "exif_rotation": "warning",
                "size_outlier": "warning", "duplicate": "warning", "near_duplicate": "warning", "imbalance": "warning"}
    assert {k: kinds.get(k) for k in expected} == expected
    doc = json.loads((out / "doctor.json").read_text())
    assert doc["stats"]["suggested_class_weights"]["disc"] > doc["stats"]["suggested_class_weights"]["square"]
    assert "<img src=\"data:image/png;base64," in (out / "doctor.html").read_text()
    assert "Traceback" not in res.err and "doctor: 5 error(s)" in res.err


def test_doctor_finds_box_problems(tmp_path):
    def plant(c):
        c["annotations"] = [a for a in c["annotations"] if a["image_id"] != 3]                # an image without boxes
        c["annotations"] += [{"id": 90, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 4]},        # degenerate
                             {"id": 91, "image_id": 2, "category_id": 1, "bbox": [80, 80, 5, 5]},      # outside
                             {"id": 92, "image_id": 2, "category_id": 2, "bbox": [60, 60, 10, 10]},    # clipped
                             {"id": 93, "image_id": 4, "category_id": 2, "bbox": [1, 1, 2, 2]}]        # tiny vs anchors
        return c
    root = tmp_path / "d"
    bf.write_json(root / "coco.json", plant(bf.coco_set(root, n=6, size=64)))
    out = tmp_path / "doc"
    res = vt("doctor", "detection", f"data.train.images={root / 'images'}", f"data.train.annotations={root / 'coco.json'}",
             "model.backbone=timm/test_efficientnet", "train.image_size=64", "--out", out)
    assert res.rc == 1, res.err
    kinds = _kinds(out)
    assert kinds["degenerate_boxes"] == kinds["boxes_outside_image"] == "error"
    assert kinds["clipped_boxes"] == kinds["no_boxes"] == kinds["anchor_mismatch"] == "warning"
    assert json.loads((out / "doctor.json").read_text())["stats"]["anchor_sizes"]


def test_doctor_finds_mask_problems(tmp_path):
    root = bf.mask_set(tmp_path / "seg", n=5)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(root / "masks" / "m0.png")            # wrong size
    bf.good_image(root / "images" / "lonely.png")                                            # no mask
    out = tmp_path / "doc"
    res = vt("doctor", "segmentation", f"data.train.images={root / 'images'}", f"data.train.masks={root / 'masks'}",
             "data.classes=[bg, square, disc, triangle]", "--out", out)
    assert res.rc == 1, res.err
    kinds = _kinds(out)
    assert kinds["skipped_mask-size-mismatch"] == "error" and kinds["images_without_mask"] == "warning"
    Image.fromarray(np.full((24, 24), 9, np.uint8)).save(root / "masks" / "m0.png")          # value outside the classes
    res = vt("doctor", "segmentation", f"data.train.images={root / 'images'}", f"data.train.masks={root / 'masks'}",
             "data.classes=[bg, square, disc, triangle]", "--out", out)
    assert res.rc == 1 and _kinds(out) == {"unreadable_dataset": "error"}
    assert "holds value 9" in json.loads((out / "doctor.json").read_text())["findings"][0]["message"]


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_doctor_finds_nothing_on_clean_data(tmp_path, task):
    if task == "classification":
        bf.class_folder(tmp_path / "train", per_class=12, size=48)
        bf.class_folder(tmp_path / "val", per_class=4, size=48, seed=1)
        args = [f"data.root={tmp_path}"]
    elif task == "detection":
        bf.coco_set(tmp_path, n=6, size=64)
        args = [f"data.train.images={tmp_path / 'images'}", f"data.train.annotations={tmp_path / 'coco.json'}",
                "model.backbone=timm/test_efficientnet", "train.image_size=96", "data.classes=[square, disc, triangle]"]
    else:
        bf.mask_set(tmp_path, n=6, size=48)
        args = [f"data.train.images={tmp_path / 'images'}", f"data.train.masks={tmp_path / 'masks'}"]
    out = tmp_path / "doc"
    res = vt("doctor", task, *args, "--out", out)
    assert res.rc == 0, res.err
    assert _kinds(out) == {} and "doctor: ok, 0 warning(s)" in res.err
