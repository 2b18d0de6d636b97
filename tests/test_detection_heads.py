"""The one-stage heads (fcos, ssdlite, yolo): a training step, a short run with evaluation, and
ONNX export parity from the run's best.pt; the YOLO assignment on a hand-made case."""
from __future__ import annotations

import pytest
import torch

import vision_transfer.api as vt
from vision_transfer.errors import VTError
from vision_transfer.tasks.detection.synthetic import write_scenes
from vision_transfer.tasks.detection.yolo import AssignerSettings, assign

NEW_HEADS = ("fcos", "ssdlite", "yolo")


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op thread


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_scenes(tmp_path_factory.mktemp("heads-data"), n=6, size=64, seed=3, negatives=1)["coco"]


@pytest.mark.parametrize("head", NEW_HEADS)
def test_head_trains_evaluates_and_exports_with_parity(head, scenes, tmp_path):
    over = {"data.format": "coco", "data.train.images": scenes["images"],
            "data.train.annotations": scenes["annotations"], "data.val_split": 0.3, "data.num_workers": 0,
            "model.backbone": "mobilenet_v3_small", "model.weights": "none", "model.head": head,
            "model.fpn_channels": 32, "train.epochs": 2, "train.image_size": 64, "train.batch_size": 4,
            "train.device": "cpu", "run.out_dir": str(tmp_path / "run"), "run.tensorboard": False}
    run = vt.train("detection", overrides=over)
    assert 0.0 <= run.metrics["AP50"] <= 1.0 and "per_class_AP" in run.metrics
    from vision_transfer.export.exporter import export_checkpoint

    side = export_checkpoint("detection", checkpoint=run.out_dir / "checkpoints" / "best.pt", fmt="onnx",
                             out=tmp_path / "m.onnx")
    assert side["parity"]["boxes"] <= 1e-3 and side["parity"]["scores"] <= 1e-4


def test_yolo_step_has_gradients_in_both_branches():
    m = vt.build_model("detection", backbone="mobilenet_v3_small", weights=None, num_classes=3, head="yolo",
                       image_size=64, fpn_channels=16).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 28.0], [40.0, 40.0, 43.0, 42.0]]), "labels": torch.tensor([2, 0])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]   # a negative image
    losses = m(images, targets)
    sum(losses.values()).backward()
    head = m.detector.heads[0]
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box_reg"] > 0
    assert head.cls[-1].weight.grad.abs().sum() > 0 and head.box[-1].weight.grad.abs().sum() > 0


def test_task_aligned_assignment():
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [100.0, 100.0]])
    boxes = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 0, 40, 8], [96, 96, 104, 104]])
    scores = torch.full((4, 2), 0.5)
    gt = torch.tensor([[0.0, 0, 16, 8], [99.0, 99, 101, 101]])    # the second holds no point centre but its own
    fg, idx, score = assign(scores, boxes, points, gt, torch.tensor([0, 1]), AssignerSettings(topk=2))
    assert fg.tolist() == [True, True, False, True] and idx[fg].tolist() == [0, 0, 1]
    assert score[fg].max() <= 1.0 and score[~fg].sum() == 0


def test_fcos_needs_fpn_channels_for_groupnorm():
    with pytest.raises(VTError, match="divisible by 32"):
        vt.build_model("detection", backbone="mobilenet_v3_small", weights=None, num_classes=2, head="fcos",
                       fpn_channels=16)


@pytest.mark.parametrize("head", NEW_HEADS)
def test_exported_boxes_are_in_the_pixels_of_an_image_of_another_size(head, tmp_path):
    """Tie-free check of the traced resize: an untrained head at score threshold 0 scores boxes
    alike (so NMS order is arbitrary), but every box must lie in the new image, as in PyTorch."""
    from vision_transfer.export.runtime import onnx_session
    from vision_transfer.tasks.detection.export import PerImageDetector

    m = vt.build_model("detection", backbone="mobilenet_v3_small", weights=None, num_classes=2, head=head,
                       image_size=64, fpn_channels=32).eval()
    m.detector.score_thresh = 0.0
    wrapper = PerImageDetector(m).eval()
    torch.onnx.export(wrapper, (torch.rand(3, 64, 64),), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["boxes", "scores", "labels"],
                      dynamic_axes={"image": {1: "h", 2: "w"}, "boxes": {0: "k"}, "scores": {0: "k"}, "labels": {0: "k"}})
    image = torch.rand(3, 40, 96)
    boxes = torch.from_numpy(onnx_session(tmp_path / "m.onnx").run(None, {"image": image.numpy()})[0])
    with torch.inference_mode():
        ref = wrapper(image)[0]
    assert len(boxes) == len(ref) > 0
    assert boxes[:, 2].max() <= 96 + 1e-3 and boxes[:, 3].max() <= 40 + 1e-3
    assert torch.allclose(boxes.amax(0), ref.amax(0), atol=1e-3)
