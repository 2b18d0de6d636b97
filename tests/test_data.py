"""Readers, decoding and bad files: one clear line or a counted skip, never a crash mid-epoch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_transfer.config import DataConfig
from vision_transfer.data.dataset import ImageDataset, check_images
from vision_transfer.data.folders import read_csv, read_image_folder, stratified_split
from vision_transfer.data.image import BadImage, read_image, safe_join
from vision_transfer.errors import VTError
from vision_transfer.tasks.classification import read_split_items


def _img(path, size=(12, 10), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def test_image_folder_with_train_and_val(shapes_folder):
    train, val = read_split_items(DataConfig(format="folder", root=str(shapes_folder)), seed=0)
    assert train.classes == ["disc", "square", "triangle"] == val.classes
    assert len(train) == 24 and len(val) == 12 and sorted(set(train.labels)) == [0, 1, 2]


def test_single_folder_split_is_stratified_and_seeded(tmp_path):
    for c, n in (("a", 10), ("b", 20)):
        for i in range(n):
            _img(tmp_path / c / f"{i}.png")
    items = read_image_folder(tmp_path)
    tr, va = stratified_split(items, val_fraction=0.2, seed=3)
    assert sorted(np.bincount(va.labels).tolist()) == [2, 4] and len(tr) + len(va) == 30
    tr2, va2 = stratified_split(items, val_fraction=0.2, seed=3)
    assert va2.paths == va.paths
    assert stratified_split(items, val_fraction=0.2, seed=4)[1].paths != va.paths


def test_folder_errors(tmp_path):
    with pytest.raises(VTError, match="does not exist"):
        read_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VTError, match="no class folders"):
        read_image_folder(tmp_path / "empty")
    _img(tmp_path / "data" / "cat" / "1.png")
    (tmp_path / "data" / "dog").mkdir()
    with pytest.raises(VTError, match=r"class folder .*dog holds no images"):
        read_image_folder(tmp_path / "data")
    with pytest.raises(VTError, match="did you mean 'cat'"):
        read_image_folder(tmp_path / "data", classes=["cta"])


def test_csv_reader_and_escaping_paths(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nimgs/a.png,ok\nimgs/b.png,bad\n")
    items = read_csv(csv)
    assert items.classes == ["bad", "ok"] and items.labels == [1, 0]
    csv.write_text("path,label\n../outside.png,ok\n")
    with pytest.raises(VTError, match="escapes its root"):
        read_csv(csv)
    csv.write_text("path,label\nimgs/a.png,ok\nimgs/zzz.png,ok\n")
    with pytest.raises(VTError, match=r"labels.csv:3: image 'imgs/zzz.png' not found"):
        read_csv(csv)
    with pytest.raises(VTError, match="escapes"):
        safe_join(tmp_path, "/etc/passwd")


def test_decoding_converts_every_mode_to_rgb_uint8(tmp_path):
    grey = read_image(_img(tmp_path / "g.png", mode="L", value=200))
    assert grey.shape == (10, 12, 3) and grey.dtype == np.uint8 and (grey == 200).all()
    rgba = read_image(_img(tmp_path / "a.png", mode="RGBA", value=(10, 20, 30, 0)))
    assert rgba.shape == (10, 12, 3) and tuple(rgba[0, 0]) == (10, 20, 30)
    a16 = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "d.png")
    deep = read_image(tmp_path / "d.png")
    assert deep[..., 0].tolist() == [[0, 64], [128, 255]]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6   # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").shape == (20, 10, 3)


def test_corrupt_and_empty_files_are_skipped_and_counted(tmp_path, capsys):
    good = _img(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    idx, bad = check_images([good, tmp_path / "empty.png", tmp_path / "junk.png"])
    assert idx == [0] and len(bad) == 2
    with pytest.raises(BadImage):
        read_image(tmp_path / "junk.png")
    # a file that passes the header check but fails to decode is replaced, not fatal
    truncated = tmp_path / "trunc.png"
    data = (tmp_path / "good.png").read_bytes()
    Image.new("RGB", (64, 64), 3).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    ds = ImageDataset([truncated, good], [{"label": 0}, {"label": 1}])
    sample = ds[0]   # said on the suite's console (vision_transfer.report), not as a Python warning
    assert "failed to decode mid-run" in capsys.readouterr().err
    assert sample["label"] == 1 and ds.failed == 1 and len(data) > 0


def test_atomic_writes_leave_the_old_file_on_failure_and_no_temporary(tmp_path):
    from vision_transfer.files import atomic_path, unique_stems, write_json

    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
    assert unique_stems([Path("a/x.jpg"), Path("b/x.png"), Path("y.png"), Path("c/x.tif")]) == ["x", "x_2", "y", "x_3"]
