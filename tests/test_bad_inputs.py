"""The corpus of bad inputs: every case runs through the real CLI (`vision_transfer.cli.main`, in
process) and ends either in a one-line error (exit 2, what / where / how to fix, no traceback, no
checkpoint left behind) or, for a bad item inside a dataset, a counted skip reported at the end
(`skipped 4 of 10 images: ...; see RUN/skipped.json`) while the rest trains.

Tiny on purpose: 24-64 px images, a 82k-parameter timm test network with random weights, one
epoch, no validation pass where the case does not need one. The generators live in badfiles.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import badfiles as bf
from vision_transfer.cli import main
from vision_transfer.data.coco import read_coco
from vision_transfer.data.image import read_image

FAST = ["model.backbone=timm/test_efficientnet", "model.weights=none", "train.image_size=32", "train.epochs=1",
        "train.batch_size=8", "data.num_workers=0", "run.tensorboard=false", "data.val_split=0"]


@dataclass
class Result:
    rc: int
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ": error: " in ln]


def vt(*argv: str | os.PathLike) -> Result:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([os.fspath(a) for a in argv])
    return Result(rc, err.getvalue())


def assert_one_line_error(res: Result, *needles: str) -> str:
    assert res.rc == 2, res.err
    assert "Traceback" not in res.err and "Warning:" not in res.err, res.err
    assert len(res.error_lines) == 1, res.err
    line = res.error_lines[0]
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def assert_nothing_trained(run: Path) -> None:
    """An error before training leaves at most the resolved config.yaml: no checkpoint, no temporary."""
    left = {p.relative_to(run).as_posix() for p in run.rglob("*")} if run.exists() else set()
    assert left <= {"config.yaml"}, left


# -- images inside a dataset: counted skips, the rest trains ---------------------------------

SKIPPED = {   # file name -> (generator, reason in skipped.json)
    "zero.png": (bf.zero_byte, "zero-byte"),
    "cut.jpg": (bf.truncated_jpeg, "truncated"),
    "text.jpg": (bf.not_an_image, "not-an-image"),
    "bomb.png": (bf.bomb_png, "too-large"),
}


@pytest.fixture(scope="module")
def skip_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("skips")
    bf.class_folder(root / "data", per_class=3)
    for name, (make, _) in SKIPPED.items():
        make(root / "data" / "square" / name)
    run = root / "run"
    return vt("train", "classification", f"data.root={root / 'data'}", f"run.out_dir={run}", *FAST), run


def test_bad_images_are_skipped_counted_and_reported_at_the_end(skip_run):
    res, run = skip_run
    assert res.rc == 0, res.err
    assert "Traceback" not in res.err and "UserWarning" not in res.err
    line = next(ln for ln in res.err.splitlines() if ln.startswith("skipped "))
    assert line.startswith("skipped 4 of 10 images: ") and "see " in line and "skipped.json" in line
    assert (run / "checkpoints" / "last.pt").is_file() and json.loads((run / "summary.json").read_text())["num_train"] == 6


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_each_bad_image_is_listed_with_its_reason(skip_run, name):
    res, run = skip_run
    listed = {Path(s["path"]).name: s["reason"] for s in json.loads((run / "skipped.json").read_text())["skipped"]}
    assert listed[name] == SKIPPED[name][1]
    assert f"1 {SKIPPED[name][1]}" in res.err


READABLE = {   # odd but valid: decoded to HxWx3 uint8, never skipped
    "cmyk.jpg": bf.cmyk_jpeg, "deep.png": bf.png16, "palette_alpha.png": bf.palette_transparent_png,
    "grey.png": bf.grey_png, "rgba.png": bf.rgba_png, "one.png": lambda p: bf.one_pixel(p),
}


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    bf.class_folder(root / "data", per_class=2)
    for name, make in READABLE.items():
        make(root / "data" / "disc" / name)
    weird = bf.non_utf8_name(root / "data" / "square")
    bf.symlink_loop(root / "data" / "square")
    run = root / "run"
    # a linear probe: its feature-cache key hashes every path (a non-UTF-8 name used to crash it)
    res = vt("train", "classification", f"data.root={root / 'data'}", f"run.out_dir={run}", *FAST,
             "transfer.strategy=linear_probe")
    return res, run, root / "data", weird


def test_odd_images_train_without_a_skip(odd_run):
    res, run, _, _ = odd_run
    assert res.rc == 0, res.err
    assert "Traceback" not in res.err and not (run / "skipped.json").exists()
    assert json.loads((run / "summary.json").read_text())["num_train"] == 4 + len(READABLE) + 1


@pytest.mark.parametrize("name", sorted(READABLE))
def test_odd_image_decodes_to_rgb_uint8(odd_run, name):
    _, _, data, _ = odd_run
    a = read_image(data / "disc" / name)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape[:2] == ((1, 1) if name == "one.png" else (bf.SIZE, bf.SIZE))


def test_non_utf8_file_name_is_read_and_printable(odd_run):
    _, _, _, weird = odd_run
    assert read_image(weird).shape == (bf.SIZE, bf.SIZE, 3)
    from vision_transfer.report import show_path

    assert show_path(weird).endswith("caf\\xe9.png")


def test_symlink_loop_is_ignored(odd_run):
    _, _, data, _ = odd_run
    from vision_transfer.data.image import list_images

    names = [p.name for p in list_images(data / "square")]
    assert "loop_a.png" not in names and len(names) == len(set(names))


def test_exif_rotated_image_is_read_upright_and_its_boxes_follow(tmp_path):
    """Stored W x H with orientation 6: read as H x W; the COCO size (used to clip boxes) is the upright one."""
    upright = np.zeros((40, 24, 3), np.uint8)
    upright[2:10, 4:12] = 255                                   # a white box near the top left, upright
    bf.exif_rotated_jpeg(tmp_path / "images" / "r.jpg", upright)
    a = read_image(tmp_path / "images" / "r.jpg")
    assert a.shape == (40, 24, 3) and a[4:8, 6:10].mean() > 200 and a[30:, :].mean() < 30
    coco = {"images": [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 24}],   # the file's raw size
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 2, 8, 30]}],
            "categories": [{"id": 1, "name": "thing"}]}
    data = read_coco(bf.write_json(tmp_path / "c.json", coco), tmp_path / "images")
    assert (data.images[0].width, data.images[0].height) == (24, 40)
    assert data.boxes(1)[0].tolist() == [[4, 2, 12, 32]]          # inside the upright image: not clipped
    assert data.info.get("size_mismatch") == 1


# -- detection annotations -------------------------------------------------------------------

def _coco_args(root: Path, coco: dict | None = None, *, raw: bytes | None = None) -> list[str]:
    base = bf.coco_set(root)
    path = root / "bad.json"
    if raw is not None:
        path.write_bytes(raw)
    else:
        bf.write_json(path, coco(base) if callable(coco) else base)
    return [f"data.train.images={root / 'images'}", f"data.train.annotations={path}", "data.format=coco"]


def _edit(fn):
    def apply(c):
        fn(c)
        return c
    return apply


COCO_ERRORS = {
    "no_images_key": (_edit(lambda c: c.pop("images")), ["is not COCO JSON", "'images'"]),
    "image_without_id": (_edit(lambda c: c["images"][0].pop("id")), ["an image needs an integer 'id'"]),
    "duplicate_image_id": (_edit(lambda c: c["images"][1].update(id=1)), ["image id 1 is listed twice"]),
    "unknown_category": (_edit(lambda c: c["annotations"][0].update(category_id=99)), ["category_id 99", "ids [1, 2, 3]"]),
    "annotation_for_unlisted_image": (_edit(lambda c: c["annotations"][0].update(image_id=77)),
                                      ["image_id 77", "not in 'images'"]),
    "bbox_not_four_numbers": (_edit(lambda c: c["annotations"][0].update(bbox=[1, 2, 3])), ["expected [x, y, w, h]"]),
    "dotdot_file_name": (_edit(lambda c: c["images"][0].update(file_name="../secret.png")), ["escapes its root"]),
    "absolute_file_name": (_edit(lambda c: c["images"][0].update(file_name="/etc/hostname")), ["escapes its root"]),
    "duplicate_category": (_edit(lambda c: c["categories"].append({"id": 1, "name": "again"})), ["listed twice"]),
}


@pytest.mark.parametrize("case", sorted(COCO_ERRORS))
def test_bad_coco_file_is_a_one_line_error(tmp_path, case):
    edit, needles = COCO_ERRORS[case]
    bf.good_image(tmp_path / "secret.png")                  # what `../secret.png` would read: never opened
    args = _coco_args(tmp_path / "d", edit)
    res = vt("train", "detection", *args, f"run.out_dir={tmp_path / 'run'}", *FAST)
    assert_one_line_error(res, "bad.json", *needles)
    assert_nothing_trained(tmp_path / "run")


@pytest.mark.parametrize("raw,needle", [(b"", "is empty"), (b"{not json", "not valid JSON"),
                                        (b"[1, 2]", "is not COCO JSON")], ids=["empty", "not_json", "a_list"])
def test_unparsable_coco_file_is_a_one_line_error(tmp_path, raw, needle):
    res = vt("train", "detection", *_coco_args(tmp_path / "d", raw=raw), f"run.out_dir={tmp_path / 'run'}", *FAST)
    assert_one_line_error(res, "bad.json", needle)
    assert_nothing_trained(tmp_path / "run")


@pytest.fixture(scope="module")
def coco_drop_run(tmp_path_factory):
    """One COCO set holding every problem the reader drops or fixes, counted; it still trains."""
    root = tmp_path_factory.mktemp("cocodrops")

    def plant(c):
        c["annotations"] += [
            {"id": 100, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 4]},        # zero width
            {"id": 101, "image_id": 1, "category_id": 1, "bbox": [5, 5, -3, 4]},       # negative width
            {"id": 102, "image_id": 2, "category_id": 2, "bbox": [50, 50, 8, 8]},      # entirely outside 32x32
            {"id": 103, "image_id": 2, "category_id": 2, "bbox": [28, 28, 10, 10]},    # partly outside: clipped
            {"id": 1, "image_id": 3, "category_id": 3, "bbox": [2, 2, 6, 6]},          # duplicate annotation id
        ]
        c["images"] += [{"id": 10, "file_name": "gone.png", "width": 32, "height": 32},   # file missing
                        {"id": 11, "file_name": "cut.jpg", "width": 64, "height": 64}]    # truncated
        return c

    args = _coco_args(root / "d", plant)
    bf.truncated_jpeg(root / "d" / "images" / "cut.jpg")
    run = root / "run"
    return vt("train", "detection", *args, f"run.out_dir={run}", *FAST, "train.image_size=64"), run


@pytest.mark.parametrize("kind", ["degenerate_boxes", "boxes_outside_image", "clipped_boxes",
                                  "renumbered_annotation_ids", "missing_images", "unreadable_images"])
def test_coco_problems_are_counted_and_the_rest_trains(coco_drop_run, kind):
    res, run = coco_drop_run
    assert res.rc == 0, res.err
    info = json.loads((run / "summary.json").read_text())["data_info"]
    expected = {"degenerate_boxes": 2, "renumbered_annotation_ids": len(info) and info["train_renumbered_annotation_ids"]}
    assert info[f"train_{kind}"] == expected.get(kind, 1)
    assert kind.replace("_", " ") in res.err                      # the end-of-run "data: ..." line
    assert (run / "checkpoints" / "last.pt").is_file()


def test_coco_skipped_files_are_listed(coco_drop_run):
    res, run = coco_drop_run
    listed = {Path(s["path"]).name: s["reason"] for s in json.loads((run / "skipped.json").read_text())["skipped"]}
    assert listed == {"gone.png": "missing", "cut.jpg": "truncated"}
    assert "skipped 2 of 6 images: 1 missing, 1 truncated" in res.err or "1 truncated, 1 missing" in res.err


def _voc(root: Path, xml: str) -> list[str]:
    bf.good_image(root / "images" / "a.png", size=32)
    (root / "voc").mkdir(parents=True, exist_ok=True)
    (root / "voc" / "a.xml").write_text(xml)
    return ["data.format=voc", f"data.train.images={root / 'images'}", f"data.train.annotations={root / 'voc'}"]


def test_voc_without_size_takes_the_image_size(tmp_path):
    xml = "<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>3</xmin><ymin>3</ymin>" \
          "<xmax>20</xmax><ymax>40</ymax></bndbox></object></annotation>"      # no <size>; ymax beyond 32: clipped
    run = tmp_path / "run"
    res = vt("train", "detection", *_voc(tmp_path, xml), f"run.out_dir={run}", *FAST, "train.image_size=64")
    assert res.rc == 0, res.err
    assert json.loads((run / "summary.json").read_text())["data_info"] == {"train_clipped_boxes": 1}


@pytest.mark.parametrize("xml,needle", [
    ("<annotation><filename>a.png</filename><object><name>cat</name></object></annotation>", "needs a <bndbox>"),
    ("<annotation><filename>a.png<object>", "is not valid XML"),
    ("<annotation><filename>../../etc/hostname</filename></annotation>", "escapes its root"),
], ids=["no_bndbox", "broken_xml", "dotdot_filename"])
def test_bad_voc_is_a_one_line_error(tmp_path, xml, needle):
    res = vt("train", "detection", *_voc(tmp_path, xml), f"run.out_dir={tmp_path / 'run'}", *FAST,
             "data.classes=[cat]")
    assert_one_line_error(res, "a.xml", needle)
    assert_nothing_trained(tmp_path / "run")


@pytest.mark.parametrize("line,needle", [
    ("0 0.5 0.5 0.2", "expected 'class_index cx cy w h'"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 'class_index cx cy w h'"),
    ("0 16 16 8 8", "normalised to [0, 1]"),
    ("3 0.5 0.5 0.2 0.2", "class index 3 is out of range"),
], ids=["four_numbers", "six_numbers", "pixel_values", "class_out_of_range"])
def test_bad_yolo_line_is_a_one_line_error_naming_file_and_line(tmp_path, line, needle):
    bf.good_image(tmp_path / "images" / "a.png", size=32)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(f"0 0.5 0.5 0.25 0.25\n{line}\n")
    res = vt("train", "detection", "data.format=yolo", f"data.train.images={tmp_path / 'images'}",
             f"data.train.annotations={tmp_path / 'labels'}", "data.classes=[a, b, c]",
             f"run.out_dir={tmp_path / 'run'}", *FAST)
    assert_one_line_error(res, "a.txt:2:", needle)
    assert_nothing_trained(tmp_path / "run")


# -- segmentation masks ----------------------------------------------------------------------

def _masks(tmp_path: Path, plant) -> list[str]:
    root = bf.mask_set(tmp_path / "seg")
    plant(root)
    return [f"data.train.images={root / 'images'}", f"data.train.masks={root / 'masks'}",
            f"run.out_dir={tmp_path / 'run'}", *FAST]


def _save_mask(root: Path, name: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(root / "masks" / name)


MASK_ERRORS = {
    "value_outside_classes": (lambda r: _save_mask(r, "m0.png", np.full((24, 24), 7, np.uint8)),
                              ["m0.png", "holds value 7", "4 classes", "check data.classes"]),
    "rgb_colour_mask": (lambda r: _save_mask(r, "m1.png", np.stack([np.eye(24, dtype=np.uint8) * 200,
                                                                     np.zeros((24, 24), np.uint8),
                                                                     np.zeros((24, 24), np.uint8)], -1)),
                        ["m1.png", "looks like a colour palette", "pass data.palette="]),
}


@pytest.mark.parametrize("case", sorted(MASK_ERRORS))
def test_bad_mask_is_a_one_line_error(tmp_path, case):
    plant, needles = MASK_ERRORS[case]
    res = vt("train", "segmentation", *_masks(tmp_path, plant), "data.classes=[bg, square, disc, triangle]")
    assert_one_line_error(res, *needles)
    assert_nothing_trained(tmp_path / "run")


def test_masks_of_0_and_255_are_explained(tmp_path):
    def plant(root):
        for i in range(4):
            m = np.asarray(Image.open(root / "masks" / f"m{i}.png"))
            _save_mask(root, f"m{i}.png", np.where(m > 0, 255, 0).astype(np.uint8))
    res = vt("train", "segmentation", *_masks(tmp_path, plant))
    assert_one_line_error(res, "only 0 and 255", "255 means 'ignore'", "save the object as 1")


def test_mask_problems_are_skipped_and_counted(tmp_path):
    def plant(root):
        _save_mask(root, "m0.png", np.zeros((20, 24), np.uint8))      # wrong size
        bf.zero_byte(root / "masks" / "m1.png")                         # undecodable mask
        bf.good_image(root / "images" / "lonely.png")                   # image without a mask
    res = vt("train", "segmentation", *_masks(tmp_path, plant), "data.classes=[bg, square, disc, triangle]")
    assert res.rc == 0, res.err
    run = tmp_path / "run"
    reasons = sorted(s["reason"] for s in json.loads((run / "skipped.json").read_text())["skipped"])
    assert reasons == ["mask-size-mismatch", "unreadable"]
    info = json.loads((run / "summary.json").read_text())["data_info"]
    assert info["images_without_mask"] == 1 and info["num_train" if False else "mask_size_mismatch"] == 1
    assert "skipped 2 of 4 images" in res.err


# -- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override,needles", [
    ("train.epoch=3", ["unknown config key 'train.epoch'", "did you mean 'train.epochs'"]),
    ("train.epochs=three", ["config key 'train.epochs'", "'three'"]),
    ("train.batch_size=0", ["config key 'train.batch_size'", "whole number >= 1"]),
    ("data.format=tiff", ["config key 'data.format'"]),
    ("train.lr=[1, 2", ["not valid YAML"]),
    ("epochs", ["is not key=value"]),
], ids=["unknown_key", "wrong_type", "out_of_range", "bad_choice", "bad_yaml_value", "not_key_value"])
def test_bad_override_is_a_one_line_error(tmp_path, override, needles):
    res = vt("train", "classification", f"run.out_dir={tmp_path / 'run'}", override)
    assert_one_line_error(res, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,needles", [
    ("train:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n", ["line 2", "is refused", "plain values"]),
    ("- a\n- b\n", ["must hold a mapping"]),
    ("train: {epochs: 1\n", ["is not valid YAML"]),
    ("task: detection\n", ["the config is for task 'detection'"]),
    ("trian:\n  epochs: 1\n", ["unknown config key 'trian'"]),
], ids=["python_tag", "not_a_mapping", "broken_yaml", "other_task", "unknown_section"])
def test_bad_recipe_is_a_one_line_error_and_runs_no_code(tmp_path, text, needles):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text.replace("{marker}", str(marker)))
    res = vt("train", "classification", f"run.out_dir={tmp_path / 'run'}", "-c", recipe)
    assert_one_line_error(res, *needles)
    assert not marker.exists() and not (tmp_path / "run").exists()


# -- checkpoints and weights -----------------------------------------------------------------

@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    bf.class_folder(root / "data", per_class=3)
    res = vt("train", "classification", f"data.root={root / 'data'}", f"run.out_dir={root / 'run'}", *FAST)
    assert res.rc == 0, res.err
    return root


def test_checkpoint_of_another_task_is_refused(cls_run, tmp_path):
    res = vt("eval", "detection", "--checkpoint", cls_run / "run/checkpoints/last.pt", "--out", tmp_path / "ev")
    assert_one_line_error(res, "is a classification checkpoint, not detection")
    assert not (tmp_path / "ev").exists()


def test_checkpoint_of_another_class_count_is_refused(cls_run, tmp_path):
    data = bf.class_folder(tmp_path / "three", per_class=2, classes=("square", "disc", "triangle"))
    res = vt("eval", "classification", f"data.root={data}", "data.val_split=0.5", "data.num_workers=0",
             "--checkpoint", cls_run / "run/checkpoints/last.pt", "--out", tmp_path / "ev")
    assert_one_line_error(res, "classes", "differ from the checkpoint's")
    assert not (tmp_path / "ev").exists()


def test_checkpoint_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = bf.code_running_pickle(tmp_path / "evil.pt", marker)
    res = vt("predict", "classification", "--checkpoint", ckpt, bf.good_image(tmp_path / "a.png"), "--out", tmp_path / "p")
    assert_one_line_error(res, "evil.pt", "could run code", "refused")
    assert not marker.exists()
    res = vt("train", "classification", f"model.weights={ckpt}", "model.backbone=timm/test_efficientnet")
    assert res.rc == 2 and not marker.exists()


def test_truncated_checkpoint_is_a_one_line_error(cls_run, tmp_path):
    cut = bf.truncated_file(cls_run / "run/checkpoints/last.pt", tmp_path / "cut.pt")
    res = vt("eval", "classification", "--checkpoint", cut, "--out", tmp_path / "ev")
    assert_one_line_error(res, "cut.pt", "damaged or truncated")


def test_checkpoint_with_a_mis_shaped_tensor_names_it(cls_run, tmp_path):
    ckpt = torch.load(cls_run / "run/checkpoints/last.pt", weights_only=True)
    name = next(k for k in ckpt["model"] if "classifier" in k and k.endswith("weight"))
    ckpt["model"][name] = torch.zeros(5, ckpt["model"][name].shape[1])
    torch.save(ckpt, tmp_path / "edited.pt")
    res = vt("predict", "classification", "--checkpoint", tmp_path / "edited.pt", bf.good_image(tmp_path / "a.png"),
             "--out", tmp_path / "p")
    assert_one_line_error(res, f"first: {name}", "(5, ")


def test_weights_of_another_architecture_name_the_first_mismatch(tmp_path):
    import timm

    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), tmp_path / "resnet.pth")
    data = bf.class_folder(tmp_path / "data")
    res = vt("train", "classification", f"data.root={data}", f"run.out_dir={tmp_path / 'run'}", *FAST,
             f"model.weights={tmp_path / 'resnet.pth'}")
    assert_one_line_error(res, "resnet.pth", "do not fit", "first: ", "another architecture")
    assert_nothing_trained(tmp_path / "run")


def test_predict_skips_unreadable_images_and_says_so(cls_run, tmp_path):
    imgs = tmp_path / "imgs"
    bf.good_image(imgs / "ok.png")
    bf.zero_byte(imgs / "empty.png")
    res = vt("predict", "classification", "--checkpoint", cls_run / "run/checkpoints/last.pt", imgs, "--out", tmp_path / "p")
    assert res.rc == 0 and "Traceback" not in res.err and "skipped 1" in res.err
    assert len(json.loads((tmp_path / "p" / "predictions.json").read_text())) == 1
