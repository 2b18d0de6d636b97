"""Segmentation plugin: metrics, readers, bad masks, models over every backbone family, a short run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision_transfer.backbones import create_backbone
from vision_transfer.backbones.torchvision_family import FAMILIES
from vision_transfer.config import DataConfig
from vision_transfer.data.synthetic import make_scene
from vision_transfer.errors import VTError
from vision_transfer.tasks.segmentation import Segmentation, register_head
from vision_transfer.tasks.segmentation.data import build_splits, coco_split, mask_folder_split
from vision_transfer.tasks.segmentation.metrics import ConfusionMatrix, segmentation_metrics
from vision_transfer.tasks.segmentation.model import SEGMENTATION_HEADS, build_segmentation_model

SHAPES = ["background", "square", "disc", "triangle"]


def write_folder(root, seeds, *, size=64, binary=False, **scene):
    """images/ + masks/ of generated scenes; returns the exact masks by stem."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    truth = {}
    for s in seeds:
        sc = make_scene(seed=s, size=size, **scene)
        mask = (sc["mask"] > 0).astype(np.uint8) if binary else sc["mask"].astype(np.uint8)
        Image.fromarray(sc["image"]).save(root / "images" / f"s{s}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{s}.png")
        truth[f"s{s}"] = mask
    return truth


# -- metrics ------------------------------------------------------------------------------------

def test_metrics_match_a_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred[:1], target[:1])   # accumulated over two "batches"
    cm.update(pred[1:], target[1:])
    expected = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]   # the two ignored pixels are not counted
    assert cm.matrix.tolist() == expected
    m = segmentation_metrics(cm.matrix, ["bg", "a", "b"])
    iou = [1 / 3, 2 / 3, 1 / 2]       # tp / (tp + fp + fn)
    dice = [2 / 4, 4 / 5, 2 / 3]
    assert m["per_class_IoU"] == pytest.approx(dict(zip(["bg", "a", "b"], iou)))
    assert m["mIoU"] == pytest.approx(np.mean(iou))
    assert m["mDice"] == pytest.approx(np.mean(dice))
    assert m["pixel_accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == expected


def test_absent_class_is_left_out_of_the_mean():
    m = segmentation_metrics([[5, 0, 0], [1, 4, 0], [0, 0, 0]], ["bg", "a", "never"])
    assert m["per_class_IoU"]["never"] == -1.0
    assert m["mIoU"] == pytest.approx((5 / 6 + 4 / 5) / 2)


# -- readers ------------------------------------------------------------------------------------

def test_mask_folder_and_coco_polygons_give_the_same_masks(tmp_path):
    from pycocotools import mask as mask_utils

    truth = write_folder(tmp_path, range(4), max_objects=4)
    images, anns = [], []
    for i, s in enumerate(range(4)):
        sc = make_scene(seed=s, size=64, max_objects=4)
        images.append({"id": i + 1, "file_name": f"s{s}.png", "width": 64, "height": 64})
        for m, lab, box in zip(sc["instance_masks"], sc["labels"], sc["boxes"]):
            if lab == 0:   # squares as polygons (pixel-edge corners: exact), the others as RLE
                x1, y1, x2, y2 = (float(v) for v in box)
                seg = [[x1, y1, x2, y1, x2, y2, x1, y2]]
            else:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                seg = {"size": rle["size"], "counts": rle["counts"].decode()}
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1, "iscrowd": 0,
                         "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                         "area": float(m.sum()), "segmentation": seg})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(SHAPES[1:])]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    from collections import Counter

    folder_items, folder_mask = mask_folder_split(str(tmp_path / "images"), str(tmp_path / "masks"), classes=SHAPES,
                                                  palette=None, info=Counter())
    coco_items, coco_mask = coco_split(str(ann_file), str(tmp_path / "images"), classes=SHAPES, info=Counter())
    assert len(folder_items) == len(coco_items) == 4
    for (fp, fm), (cp, cm) in zip(folder_items, coco_items):
        assert fp.name == cp.name
        a, b = folder_mask(fm, (64, 64)), coco_mask(cm, (64, 64))
        assert np.array_equal(a, truth[fp.stem]) and np.array_equal(a, b)


def test_palette_masks_read_by_colour(tmp_path):
    truth = write_folder(tmp_path, [7], binary=True)["s7"]
    rgb = np.zeros((*truth.shape, 3), np.uint8)
    rgb[truth == 1] = (255, 0, 0)
    rgb[:2, :2] = (255, 255, 255)
    Image.fromarray(rgb).save(tmp_path / "masks" / "s7.png")
    data = DataConfig(format="masks", classes=["background", "cell"], train={"images": str(tmp_path / "images"),
                      "masks": str(tmp_path / "masks")}, val_split=0,
                      palette={"background": [0, 0, 0], "cell": [255, 0, 0], "ignore": [255, 255, 255]})
    splits = build_splits(data=data, image_size=32, preprocessing=create_backbone("resnet18").preprocessing, seed=0)
    expected = truth.astype(np.int64)
    expected[:2, :2] = 255
    assert np.array_equal(splits.train.load(0)[1], expected)


def test_bad_masks_are_an_error_or_a_counted_skip(tmp_path):
    write_folder(tmp_path, range(4), binary=True)
    (tmp_path / "masks" / "s0.png").unlink()                                        # image without a mask
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "masks" / "s1.png")   # wrong size
    data = DataConfig(format="masks", classes=["background", "fg"], val_split=0,
                      train={"images": str(tmp_path / "images"), "masks": str(tmp_path / "masks")})
    pre = create_backbone("resnet18").preprocessing
    from vision_transfer import report

    report.reset()
    splits = build_splits(data=data, image_size=32, preprocessing=pre, seed=0)   # counted, listed at the run's end
    assert [(Path(r["path"]).name, r["reason"]) for r in report.skipped()] == [("s1.png", "mask-size-mismatch")]
    assert len(splits.train) == 2
    assert splits.info == {"images_without_mask": 1, "mask_size_mismatch": 1}
    bad = np.zeros((64, 64), np.uint8)
    bad[3, 3] = 7                                                                # value outside the classes
    Image.fromarray(bad).save(tmp_path / "masks" / "s2.png")
    with pytest.raises(VTError, match=r"s2.png holds value 7 .*data.classes") as e:
        build_splits(data=data, image_size=32, preprocessing=pre, seed=0)
    assert "\n" not in str(e.value)


# -- models -------------------------------------------------------------------------------------

FAMILY_REPS = [names[0] for _, names in FAMILIES.values()] + ["tf_efficientnet_lite0", "timm/resnet10t"]


@pytest.mark.parametrize("name", FAMILY_REPS)
def test_every_backbone_family_builds_a_unet(name):
    model = Segmentation().build_model(backbone=create_backbone(name, weights=None), num_classes=3, head="unet")
    x = torch.randn(1, 3, 40, 56)        # not a multiple of 32
    out = model(x)
    assert out.shape == (1, 3, 40, 56)
    loss = model.criterion(out, torch.randint(0, 3, (1, 40, 56)))["loss"]
    loss.backward()
    assert any(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("head", ["fpn", "deeplabv3plus", "fcn", "deeplabv3"])
def test_other_heads_give_input_resolution(head):
    model = build_segmentation_model(backbone=create_backbone("resnet18", weights=None), num_classes=2, head=head)
    model.eval()
    assert model(torch.randn(2, 3, 50, 70)).shape == (2, 2, 50, 70)


def test_custom_head_registers_and_builds():
    @register_head("test_tiny_head", override=True)
    def tiny(*, feature_info, num_classes, **_):
        return torch.nn.Conv2d(feature_info[-1].channels, num_classes, 1)   # forward(features) below

    class Last(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, features):
            return self.conv(features[-1])

    assert "test_tiny_head" in SEGMENTATION_HEADS
    conv = SEGMENTATION_HEADS.get("test_tiny_head")(feature_info=create_backbone("resnet18").feature_info,
                                                    num_classes=4)
    model = build_segmentation_model(backbone=create_backbone("resnet18"), num_classes=4, head=Last(conv))
    assert model(torch.randn(1, 3, 33, 33)).shape == (1, 4, 33, 33)
    with pytest.raises(VTError, match="unknown segmentation head 'unett'; did you mean 'unet'"):
        build_segmentation_model(backbone=create_backbone("resnet18"), num_classes=2, head="unett")


# -- a short run, then predict ------------------------------------------------------------------

def test_short_run_learns_and_predict_matches_its_miou(tmp_path):
    import vision_transfer.api as api
    from vision_transfer.tasks.segmentation.metrics import miou_from_masks as recompute

    write_folder(tmp_path / "train", range(16), size=48, binary=True, max_objects=3, min_radius=4)
    val_truth = write_folder(tmp_path / "val", range(100, 104), size=48, binary=True, max_objects=3, min_radius=4)
    run = api.train("segmentation", overrides={
        "data.format": "masks", "data.classes": ["background", "fg"],
        "data.train.images": str(tmp_path / "train/images"), "data.train.masks": str(tmp_path / "train/masks"),
        "data.val.images": str(tmp_path / "val/images"), "data.val.masks": str(tmp_path / "val/masks"),
        "model.backbone": "mobilenet_v3_small", "model.weights": "none", "model.decoder_channels": [64, 32, 16, 16, 16],
        "train.epochs": 3, "train.batch_size": 4, "train.image_size": 48, "train.lr": 1e-2, "train.device": "cpu", "data.num_workers": 0,
        "run.out_dir": str(tmp_path / "run"), "run.tensorboard": False})
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    assert run.metrics["mIoU"] > 0.6          # all-background would score about 0.4
    out = tmp_path / "pred"
    api.predict("segmentation", checkpoint=tmp_path / "run/checkpoints/best.pt", inputs=[str(tmp_path / "val/images")],
                out=out, device="cpu")
    preds = [np.array(Image.open(out / f"{stem}.png")) for stem in sorted(val_truth)]
    assert all(p.shape == (48, 48) and set(np.unique(p)) <= {0, 1} for p in preds)
    assert (out / "s100_overlay.png").is_file()
    assert recompute(preds, [val_truth[s] for s in sorted(val_truth)], 2) == pytest.approx(run.metrics["mIoU"],
                                                                                             abs=1e-6)


def test_torchvision_head_weights_load_from_a_file_or_fail_in_one_line(tmp_path):
    from torchvision.models.segmentation.fcn import FCNHead

    from vision_transfer.tasks.segmentation.model import load_torchvision_head

    reference = FCNHead(512, 21)   # torchvision's file layout: classifier.* (21 VOC classes)
    torch.save({f"classifier.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "fcn.pth")
    model = build_segmentation_model(backbone=create_backbone("resnet18"), num_classes=2, head="fcn")
    assert load_torchvision_head(model.decoder, head="fcn", backbone="resnet18", weights=str(tmp_path / "fcn.pth")) > 0
    assert torch.equal(model.decoder.head[0].weight, reference[0].weight)   # all but the last conv
    with pytest.raises(VTError, match="only for .*resnet50") as e:
        load_torchvision_head(model.decoder, head="fcn", backbone="resnet18", weights="coco")
    assert "\n" not in str(e.value)


def test_persistent_loader_workers_see_each_epoch_of_augmentation(tmp_path):
    """Loader workers live across epochs; the augmentation they apply in epoch e must still be
    epoch e's, the same as the main process draws with no workers."""
    from vision_transfer.engine.device import Runtime
    from vision_transfer.engine.loop import make_loader

    write_folder(tmp_path, range(6), size=32)
    data = DataConfig(format="masks", train={"images": str(tmp_path / "images"), "masks": str(tmp_path / "masks")},
                      classes=SHAPES, val_split=0.0)
    pre = create_backbone("resnet18").preprocessing
    rt = Runtime(device=torch.device("cpu"))
    task = Segmentation()
    runs = {}
    for workers in (0, 1):
        train = build_splits(data=data, image_size=32, preprocessing=pre, seed=3).train
        loader = make_loader(train, task, batch_size=6, train=True, seed=3, rt=rt, num_workers=workers)
        assert loader.persistent_workers == (workers > 0)
        runs[workers] = []
        for epoch in range(3):
            loader.sampler.set_epoch(epoch)
            train.set_epoch(epoch)
            runs[workers].append(next(iter(loader)))
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
