"""Detection data: COCO / VOC / YOLO readers on generated scenes (exact boxes), id mapping, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_transfer.config import DataConfig
from vision_transfer.data.coco import read_coco
from vision_transfer.data.synthetic import SHAPE_CLASSES, make_scene
from vision_transfer.data.voc import read_voc
from vision_transfer.data.yolo import read_yolo
from vision_transfer.errors import VTError
from vision_transfer.tasks.detection.data import build_splits
from vision_transfer.tasks.detection.evaluate import coco_results, score
from vision_transfer.tasks.detection.synthetic import CATEGORY_IDS, write_scenes
from vision_transfer.backbones.base import Preprocessing


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    return root, write_scenes(root, n=6, size=64, formats=("coco", "voc", "yolo"), negatives=1)


def test_three_formats_give_the_same_boxes(scenes):
    root, p = scenes
    coco = read_coco(p["coco"]["annotations"], p["coco"]["images"])
    voc = read_voc(p["voc"]["images"], p["voc"]["annotations"], classes=SHAPE_CLASSES)
    yolo = read_yolo(p["yolo"]["images"], p["yolo"]["annotations"])
    assert coco.classes == voc.classes == yolo.classes == list(SHAPE_CLASSES)
    assert len(coco.images) == len(voc.images) == len(yolo.images) == 7
    for i in range(7):
        truth = make_scene(seed=i, size=64) if i < 6 else None
        for data in (coco, voc, yolo):
            boxes, labels = data.boxes(data.images[i].id)
            if truth is None:          # the negative image is kept, with no boxes
                assert boxes.shape == (0, 4)
                continue
            np.testing.assert_allclose(boxes, truth["boxes"], atol=1e-3)
            np.testing.assert_array_equal(labels, truth["labels"])


def test_category_ids_map_to_labels_and_back(scenes):
    _, p = scenes
    coco = read_coco(p["coco"]["annotations"], p["coco"]["images"])
    assert coco.label_to_cat == list(CATEGORY_IDS)
    assert {c: coco.label_to_cat[lab] for c, lab in coco.cat_to_label.items()} == {c: c for c in CATEGORY_IDS}
    # perfect detections, in labels from 0, come back with the file's ids and score AP 1
    import torch

    outs, ids = [], []
    for im in coco.images:
        b, lab = coco.boxes(im.id)
        outs.append({"boxes": torch.as_tensor(b), "labels": torch.as_tensor(lab), "scores": torch.ones(len(lab))})
        ids.append(im.id)
    results = coco_results(outs, ids, coco.label_to_cat)
    assert {r["category_id"] for r in results} <= set(CATEGORY_IDS)
    m = score(coco.to_coco_dict(), results, coco.classes)
    assert m["AP"] == pytest.approx(1.0) and set(m["per_class_AP"]) == set(SHAPE_CLASSES)
    assert score(coco.to_coco_dict(), [], coco.classes)["AP50"] == 0.0


def _coco_file(tmp_path: Path, anns: list, images=None) -> Path:
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    images = images or [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}]
    f = tmp_path / "ann.json"
    f.write_text(json.dumps({"images": images, "annotations": anns,
                             "categories": [{"id": 5, "name": "cell"}]}))
    return f


def _ann(i, bbox, cat=5, image_id=1, **kw):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": 1, "iscrowd": 0, **kw}


def test_bad_boxes_are_dropped_and_counted_crowd_kept_for_eval(tmp_path):
    f = _coco_file(tmp_path, [_ann(1, [1, 1, 10, 10]), _ann(2, [5, 5, 0, 3]), _ann(3, [5, 5, -2, 3]),
                              _ann(4, [60, 50, 5, 5]), _ann(5, [45, 35, 10, 10]), _ann(6, [2, 2, 8, 8], iscrowd=1)],
                   images=[{"id": 1, "file_name": "a.png", "width": 50, "height": 40},
                           {"id": 2, "file_name": "gone.png", "width": 50, "height": 40}])
    d = read_coco(f, tmp_path)
    assert d.info == {"degenerate_boxes": 2, "boxes_outside_image": 1, "clipped_boxes": 1, "missing_images": 1}
    boxes, _ = d.boxes(1)
    np.testing.assert_allclose(boxes, [[1, 1, 11, 11], [45, 35, 50, 40]])     # crowd left out, clipped
    assert sum(a["iscrowd"] for a in d.to_coco_dict()["annotations"]) == 1


@pytest.mark.parametrize("anns, match", [
    ([_ann(1, [1, 1, 5, 5], cat=7)], "category_id 7"),
    ([_ann(1, [1, 1, 5, 5], image_id=9)], "image_id 9"),
    ([_ann(1, [1, 1, 5])], "bbox"),
])
def test_inconsistent_coco_is_one_line_error(tmp_path, anns, match):
    with pytest.raises(VTError, match=match) as e:
        read_coco(_coco_file(tmp_path, anns), tmp_path)
    assert "\n" not in str(e.value)


def test_path_escaping_root_is_refused(tmp_path):
    f = _coco_file(tmp_path, [], images=[{"id": 1, "file_name": "../../etc/passwd"}])
    with pytest.raises(VTError, match="escapes"):
        read_coco(f, tmp_path)


def test_yolo_and_voc_errors(scenes, tmp_path):
    _, p = scenes
    with pytest.raises(VTError, match="out of range"):
        read_yolo(p["yolo"]["images"], p["yolo"]["annotations"], classes=["only"])
    with pytest.raises(VTError, match="not in data.classes"):
        read_voc(p["voc"]["images"], p["voc"]["annotations"], classes=["square", "disc"])
    bad = tmp_path / "labels"
    bad.mkdir()
    (bad / "scene_000.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(VTError, match=r"scene_000.txt:1"):
        read_yolo(p["yolo"]["images"], bad, classes=list(SHAPE_CLASSES))


def test_splits_hold_out_val_and_augment_boxes(scenes):
    _, p = scenes
    data = DataConfig(format="coco", train={"images": p["coco"]["images"], "annotations": p["coco"]["annotations"]},
                      val_split=0.3)
    s = build_splits(data=data, image_size=64, preprocessing=Preprocessing(), seed=0)
    assert len(s.train) + len(s.val) == 7 and len(s.val) == 2 and s.classes == list(SHAPE_CLASSES)
    assert not {im.id for im in s.train.coco.images} & {im.id for im in s.val.coco.images}
    x = s.val[0]
    assert x["image"].dtype.is_floating_point and x["image"].shape[0] == 3 and float(x["image"].max()) <= 1.0
    truth, _ = s.val.coco.boxes(x["image_id"])
    np.testing.assert_allclose(x["boxes"].numpy(), truth)        # val: boxes untouched
    for epoch in range(4):                                       # train: boxes stay inside the image
        s.train.set_epoch(epoch)
        y = s.train[0]
        h, w = y["image"].shape[1:]
        b = y["boxes"].numpy()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()
