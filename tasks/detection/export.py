"""What detection exports: one image in, boxes / scores / labels after NMS out.

The graph holds the whole detector, resize, normalisation, decoding and NMS included (torchvision's
detectors trace to ONNX from opset 11), so the exported model needs nothing but the image:

    image (3, H, W) float RGB in [0, 1], any H, W  ->  boxes (K, 4) xyxy in the image's pixels,
                                                      scores (K,), labels (K,) int64 from 0

H and W are always free (the detector resizes internally); a batch is a loop over images (each
image is resized on its own, as in PyTorch). `image_size` changes the size the detector resizes to.
"""
from __future__ import annotations

import torch
from torch import nn

from vision_transfer.errors import VTError
from vision_transfer.export.spec import ExportSpec, scene_images

# scores and labels must match to float precision; boxes within 1e-3 px (the parity bar)
TOLERANCE = {"boxes": 1e-3, "scores": 1e-4, "labels": 0.0}


class PerImageDetector(nn.Module):
    """`forward(image (3, H, W)) -> (boxes, scores, labels)` of a `Detector` in eval mode."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector([image])[0]
        return out["boxes"], out["scores"], out["labels"]


def compare_detections(ref: list[torch.Tensor], got: list[torch.Tensor], names: list[str]) -> dict[str, float]:
    """Largest differences between two detection lists (boxes, scores, labels; sorted by score).

    Index-aligned comparison breaks on ties: detectors often score many boxes alike (an untrained
    one, all of them), and then which of the tied boxes comes first, or survives the top-K cut, is
    arbitrary. So each PyTorch detection is matched to the exported one of the same label and a
    score within tolerance whose box is nearest; detections tied with the lowest kept score are
    left out when the list is full (the cut may fall anywhere inside the tie)."""
    (rb, rs, rl), (gb, gs, gl) = ref, got
    tol = TOLERANCE["scores"]
    if len(rs) != len(gs):
        raise VTError(f"export parity failed: {len(gs)} detections exported but {len(rs)} in PyTorch")
    if not len(rs):
        return {"boxes": 0.0, "scores": 0.0, "labels": 0.0}
    scores = float((rs.sort(descending=True).values - gs.sort(descending=True).values).abs().max())
    box_diff, label_diff = 0.0, 0.0
    floor = float(rs.min()) + tol
    for b, s, lab in zip(rb, rs, rl):
        if float(s) <= floor:
            continue
        near = ((gs - s).abs() <= tol) & (gl == lab)
        if not near.any():
            label_diff = 1.0
            continue
        box_diff = max(box_diff, float((gb[near] - b).abs().max(dim=1).values.min()))
    return {"boxes": box_diff, "scores": scores, "labels": label_diff}


def set_image_size(model: nn.Module, image_size: int) -> None:
    """The size a torchvision-style detector resizes to (its GeneralizedRCNNTransform)."""
    transform = getattr(model.detector, "transform", None)
    if transform is None:
        raise VTError(f"{type(model.detector).__name__} has no resize transform: export it without --image-size")
    transform.min_size, transform.max_size = (image_size,), image_size
    if getattr(transform, "fixed_size", None):
        transform.fixed_size = (image_size, image_size)


def detection_export_spec(model: nn.Module, *, meta: dict, image_size: int, batch: int,
                          dynamic: bool) -> ExportSpec:
    stride = max(f.stride for f in model.backbone.feature_info)
    if image_size < stride:
        raise VTError(f"--image-size {image_size}: the detector's deepest map has stride {stride}; "
                      f"give at least {stride}, e.g. {max(stride * 4, 64)}")
    if image_size != int(meta["image_size"]):
        set_image_size(model, image_size)
    wrapper = PerImageDetector(model).eval()
    first, *rest = [torch.from_numpy(a).permute(2, 0, 1).float().div(255)
                    for a in scene_images(3, image_size, seed=7)]
    # a scene of another size (not square) checks that the traced resize generalises
    other = torch.nn.functional.interpolate(rest[0][None], size=(image_size * 3 // 4, image_size + 16))[0]
    return ExportSpec(module=wrapper, inputs=(first,), input_names=["image"],
                      output_names=["boxes", "scores", "labels"], io="per_image",
                      dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                                    "scores": {0: "detections"}, "labels": {0: "detections"}},
                      tolerance=dict(TOLERANCE), other_inputs=[(rest[1],), (other,)], compare=compare_detections,
                      extra_meta={"input_layout": "image (3, H, W) float RGB in [0, 1]"})
