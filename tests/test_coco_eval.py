"""Model-free COCO evaluation: parity with pycocotools, validation errors, the CLI, no torch import."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from vision_transfer.errors import VTError
from vision_transfer.evaluation.coco import BACKENDS, METRIC_NAMES, evaluate_coco

CATS = (1, 3, 7, 20, 90)  # non-contiguous ids; 90 never occurs in the ground truth


def make_case(seed: int = 0, *, n_images: int = 40, scales=(12, 50, 150), ties: bool = True):
    """Boxes of every area range, crowd regions, images without ground truth (id % 7 == 0),
    images without detections (id % 5 == 0), one image with 150 detections (id 3), tied scores."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 640, "height": 480} for i in range(n_images)]
    anns, res = [], []
    for im in images:
        iid = im["id"]
        for _ in range(0 if iid % 7 == 0 else int(rng.integers(1, 8))):
            w, h = rng.uniform(0.5, 1.5, 2) * rng.choice(scales)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            c = int(rng.choice(CATS[:-1]))
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(rng.random() < 0.08)})
            for _ in range(int(rng.integers(0, 3)) if iid % 5 else 0):  # hits, duplicates, wrong classes
                j = rng.normal(0, 0.06, 4) * [w, h, w, h]
                res.append({"image_id": iid, "category_id": c if rng.random() < 0.85 else int(rng.choice(CATS)),
                            "bbox": [x + j[0], y + j[1], w + abs(j[2]), h + abs(j[3])], "score": rng.random()})
        for _ in range((150 if iid == 3 else int(rng.integers(0, 4))) if iid % 5 else 0):  # background
            w, h = rng.uniform(4, 200, 2)
            res.append({"image_id": iid, "category_id": int(rng.choice(CATS)),
                        "bbox": [rng.uniform(0, 500), rng.uniform(0, 400), w, h], "score": rng.random() * 0.6})
    for r in res:
        r["bbox"] = [float(v) for v in r["bbox"]]
        r["score"] = round(float(r["score"]), 1) if ties else float(r["score"])
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in CATS]}
    return gt, res


def reference(gt: dict, res: list, iou_type: str = "bbox"):
    """A plain pycocotools run: (the twelve numbers, per-category AP from the precision array)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, res = copy.deepcopy(gt), copy.deepcopy(res)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        per_class[coco.cats[cid]["name"]] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return dict(zip(METRIC_NAMES, map(float, ev.stats))), per_class


def assert_parity(gt, res, iou_type="bbox"):
    ref, ref_pc = reference(gt, res, iou_type)
    for backend in BACKENDS:
        m = evaluate_coco(gt, res, iou_type=iou_type, backend=backend)
        for name in METRIC_NAMES:
            assert m[name] == pytest.approx(ref[name], abs=1e-4), (backend, name)
        assert m["per_class_AP"].keys() == ref_pc.keys()
        for name, ap in ref_pc.items():
            assert m["per_class_AP"][name] == pytest.approx(ap, abs=1e-4), (backend, name)
    return ref


def test_bbox_parity_mixed_case():
    gt, res = make_case()
    # the case holds what it claims to test
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert max(sum(r["image_id"] == i for r in res) for i in (3,)) > 100
    assert {im["id"] for im in gt["images"]} - {a["image_id"] for a in gt["annotations"]}
    ref = assert_parity(gt, res)
    assert all(ref[k] > 0 for k in ("APs", "APm", "APl", "AR1", "AR100"))
    assert ref["AR10"] < ref["AR100"] or ref["AR10"] == ref["AR100"]


@pytest.mark.parametrize("seed", [1, 2])
def test_bbox_parity_more_seeds_and_untied_scores(seed):
    assert_parity(*make_case(seed, n_images=25, ties=seed == 1))


def test_undefined_area_range_is_minus_one():
    gt, res = make_case(3, n_images=15, scales=(150,))  # large objects only
    ref = assert_parity(gt, res)
    m = evaluate_coco(gt, res)
    assert m["APs"] == -1.0 and ref["APs"] == -1.0
    assert m["per_class_AP"]["c90"] == -1.0 and "c90" not in m["pr_curves"]


def test_pr_curves_and_counts():
    gt, res = make_case()
    m = evaluate_coco(gt, res)
    recall, precision = m["pr_curves"]["c1"]["IoU=0.50"]
    assert len(recall) == len(precision) == 101 and recall[0] == 0.0 and recall[-1] == 1.0
    assert all(a >= b for a, b in zip(precision, precision[1:]))  # COCO's interpolation is monotone
    _, p_avg = m["pr_curves"]["c1"]["IoU=0.50:0.95"]
    assert sum(p_avg) / 101 == pytest.approx(m["per_class_AP"]["c1"], abs=1e-9)
    assert m["counts"]["detections"] == len(res) and m["counts"]["categories"] == len(CATS)


def test_inputs_not_modified_and_coco_object_accepted():
    from pycocotools.coco import COCO

    gt, res = make_case(n_images=10)
    gt0, res0 = copy.deepcopy(gt), copy.deepcopy(res)
    a = evaluate_coco(gt, res, backend="pycocotools")
    b = evaluate_coco(gt, res, backend="faster-coco-eval")
    assert gt == gt0 and res == res0
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    c = evaluate_coco(coco, res)
    assert a["AP"] == pytest.approx(b["AP"], abs=1e-4) and c["AP"] == pytest.approx(a["AP"], abs=1e-12)


def make_segm_case(seed: int = 0):
    """Masks on 60x80 images: polygon and RLE ground truth, a crowd RLE, RLE results."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    H, W = 60, 80
    images = [{"id": i, "height": H, "width": W} for i in (2, 4, 6, 8, 10)]
    anns, res = [], []
    yy, xx = np.mgrid[:H, :W]
    for im in images:
        for j in range(3 if im["id"] != 10 else 0):
            cy, cx, r = rng.uniform(15, 45), rng.uniform(15, 65), rng.uniform(3, 14)
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            rle = mask_utils.encode(np.asfortranarray(m))
            seg = ({"size": rle["size"], "counts": rle["counts"].decode()} if j != 1 else
                   [[cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r]])
            c = (1, 3, 7)[j]
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "segmentation": seg,
                         "area": float(m.sum()) if j != 1 else 4 * r * r, "bbox": list(map(float, mask_utils.toBbox(rle))),
                         "iscrowd": int(j == 2 and im["id"] == 4)})
            if im["id"] == 8:
                continue
            for _ in range(2):
                dm = ((yy - cy - rng.normal(0, 2)) ** 2 + (xx - cx - rng.normal(0, 2)) ** 2
                      <= (r * rng.uniform(0.8, 1.2)) ** 2).astype(np.uint8)
                d = mask_utils.encode(np.asfortranarray(dm))
                res.append({"image_id": im["id"], "category_id": c, "score": float(rng.random()),
                            "segmentation": {"size": d["size"], "counts": d["counts"].decode()}})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"s{c}"} for c in (1, 3, 7, 9)]}
    return gt, res


def test_segm_parity():
    gt, res = make_segm_case()
    ref = assert_parity(gt, res, "segm")
    assert ref["AP"] > 0.1


# ----------------------------------------------------------------------------------- validation

def _bad(res, i, **change):
    r = dict(res[i])
    for k, v in change.items():
        if v is KeyError:
            r.pop(k, None)
        else:
            r[k] = v
    res[i] = r


@pytest.mark.parametrize("change, words", [
    ({"image_id": 999}, "image_id 999 is not in the ground truth"),
    ({"category_id": 2}, "category_id 2 is not in the ground truth"),
    ({"bbox": [1, 2, 3]}, "bbox must be 4 numbers"),
    ({"bbox": [1, 2, -3, 4]}, "negative width or height"),
    ({"bbox": [1, 2, float("nan"), 4]}, "non-finite"),
    ({"bbox": [1, "2", 3, 4]}, "non-numeric"),
    ({"score": KeyError}, "no 'score'"),
    ({"score": "high"}, "score must be a finite number"),
    ({"score": float("inf")}, "score must be a finite number"),
])
def test_results_validation_names_first_bad_entry_and_count(change, words):
    gt, res = make_case(n_images=10)
    for i in (4, 7, 9):
        _bad(res, i, **change)
    with pytest.raises(VTError) as e:
        evaluate_coco(gt, res)
    msg = str(e.value)
    assert "\n" not in msg and words in msg
    assert f"3 of {len(res)} entries are bad; first is entry 4" in msg


@pytest.mark.parametrize("change, words", [
    ({"segmentation": KeyError}, "no 'segmentation'"),
    ({"segmentation": [[1, 2, 3, 4, 5, 6]]}, "compressed RLE"),
    ({"segmentation": {"size": [60, 80], "counts": [3, 4]}}, "compressed RLE string"),
    ({"segmentation": {"size": [10, 10], "counts": "abc"}}, "differs from the image"),
])
def test_segm_validation(change, words):
    gt, res = make_segm_case()
    _bad(res, 1, **change)
    with pytest.raises(VTError, match="1 of .* entries are bad; first is entry 1") as e:
        evaluate_coco(gt, res, iou_type="segm")
    assert words in str(e.value)


@pytest.mark.parametrize("results, words", [([], "empty list"), ({"annotations": []}, "not a COCO results list")])
def test_empty_or_not_a_list(results, words):
    gt, _ = make_case(n_images=5)
    with pytest.raises(VTError, match=words):
        evaluate_coco(gt, results)


@pytest.mark.parametrize("gt, words", [
    ([1, 2], "not COCO ground truth"),
    ({"images": []}, "no annotations / categories list"),
    ({"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1}], "categories": [{"id": 1, "name": "a"}]},
     "first is entry 0: annotation has no 'category_id'"),
])
def test_gt_not_coco(gt, words):
    with pytest.raises(VTError, match=words):
        evaluate_coco(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])


def test_empty_or_bad_json_files(tmp_path):
    gt, res = make_case(n_images=5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "broken.json").write_text("[{")
    for name, words in (("empty.json", "is empty"), ("broken.json", "not valid JSON"), ("nope.json", "does not exist")):
        with pytest.raises(VTError, match=words):
            evaluate_coco(tmp_path / "gt.json", tmp_path / name)


# ------------------------------------------------------------------------------------------ CLI

def _write_case(tmp_path):
    gt, res = make_case(n_images=20)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(res))
    return gt, res


def test_cli_end_to_end(tmp_path, capsys):
    from vision_transfer.cli import main

    gt, res = _write_case(tmp_path)
    assert main(["eval", "detection", "--gt", str(tmp_path / "gt.json"),
                 "--predictions", str(tmp_path / "results.json"), "--backend", "pycocotools"]) == 0
    out_dir = tmp_path / "results_eval"  # the documented default
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert list(metrics) == [*METRIC_NAMES, "per_class_AP"]
    ref, ref_pc = reference(gt, res)
    assert all(metrics[k] == pytest.approx(ref[k], abs=1e-4) for k in METRIC_NAMES)
    assert metrics["per_class_AP"] == pytest.approx(ref_pc, abs=1e-4)
    html = (out_dir / "report.html").read_text()
    assert html.count("<svg") == 1 + sum(v > -1 for v in ref_pc.values())  # mean + one per class
    assert "<script" not in html and "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "| c1 |" in (out_dir / "report.md").read_text()
    assert "AP50" in capsys.readouterr().out


def test_cli_bad_results_is_one_line_exit_2(tmp_path, capsys):
    from vision_transfer.cli import main

    gt, res = _write_case(tmp_path)
    res[3]["category_id"] = 5
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert main(["eval", "detection", "--gt", str(tmp_path / "gt.json"), "--predictions",
                 str(tmp_path / "results.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "first is entry 3: category_id 5 is not in the ground truth" in err
    assert not (tmp_path / "o").exists()


def test_model_free_path_does_not_import_torch(tmp_path):
    # (cv2 is not checked: faster_coco_eval.core.mask imports it itself, about 15 ms)
    _write_case(tmp_path)
    code = ("import sys; from vision_transfer.cli import main; "
            f"rc = main(['eval', 'detection', '--gt', {str(tmp_path / 'gt.json')!r}, '--predictions', "
            f"{str(tmp_path / 'results.json')!r}, '--out', {str(tmp_path / 'o')!r}]); "
            "heavy = {'torch', 'torchvision', 'albumentations', 'timm', 'matplotlib'} & set(sys.modules); "
            "print('HEAVY', sorted(heavy), rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY [] 0" in out


def test_segm_gt_needs_masks_and_image_sizes():
    gt, res = make_segm_case()
    gt["annotations"][4]["segmentation"] = []  # pycocotools would stop with an IndexError
    with pytest.raises(VTError, match="first is entry 4: annotation needs polygons"):
        evaluate_coco(gt, res, iou_type="segm")
    del gt["images"][1]["height"]
    with pytest.raises(VTError, match="first is entry 1: image 4 needs integer height and width"):
        evaluate_coco(gt, res, iou_type="segm")
