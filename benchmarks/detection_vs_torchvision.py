"""`vt train detection` against a plain hand-written torchvision Faster R-CNN, same backbone and data.

Data: generated 128-px tiles with about ten small shapes each (exact boxes), COCO JSON, a train
and a val set. Both sides: EfficientNet-Lite0 (packaged ImageNet weights), 30 epochs, input
256 px, batch 4, CPU. Prints AP50 / AP of each, their ratio, wall times, and checks that
`vt eval` from best.pt reproduces summary.json's AP.

    python benchmarks/detection_vs_torchvision.py [--epochs 30] [--threads N] [--out /tmp/det-bench]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path


def make_data(out: Path) -> dict:
    from vision_transfer.tasks.detection.synthetic import write_scenes

    kw = dict(size=128, max_objects=12, min_radius=4, max_radius=9)
    return {"train": write_scenes(out / "train", n=16, seed=1, **kw)["coco"],
            "val": write_scenes(out / "val", n=8, seed=2, **kw)["coco"]}


def run_vt(data: dict, out: Path, epochs: int) -> tuple[dict, float]:
    cmd = ["vt", "train", "detection", "data.format=coco", f"data.train.images={data['train']['images']}",
           f"data.train.annotations={data['train']['annotations']}", f"data.val.images={data['val']['images']}",
           f"data.val.annotations={data['val']['annotations']}", "model.backbone=tf_efficientnet_lite0",
           "model.weights=imagenet", "transfer.strategy=finetune", f"train.epochs={epochs}", "train.image_size=256",
           "train.batch_size=4", "train.device=cpu", f"run.out_dir={out}", "run.tensorboard=false"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - t0


def plain_torchvision(data: dict, epochs: int) -> tuple[dict, float]:
    """The reference: timm features + torchvision FPN + FasterRCNN, written out by hand."""
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from torch import nn
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

    from vision_transfer.backbones.timm_family import load_packaged
    from vision_transfer.evaluation.coco import evaluate_coco

    torch.manual_seed(0)

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4))
            load_packaged(self.body, "tf_efficientnet_lite0")
            self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), 128)
            self.out_channels = 128

        def forward(self, x):
            return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))

    model = FasterRCNN(Body(), num_classes=91, min_size=256, max_size=256, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                       rpn_anchor_generator=AnchorGenerator(((16, 24), (32, 48), (64, 96)), ((0.5, 1.0, 2.0),) * 3),
                       box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2))
    gt = json.loads(Path(data["train"]["annotations"]).read_text())
    cat_ids = sorted(c["id"] for c in gt["categories"])
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, len(cat_ids) + 1)

    def load(split):
        d = json.loads(Path(data[split]["annotations"]).read_text())
        items = []
        for im in d["images"]:
            a = [x for x in d["annotations"] if x["image_id"] == im["id"]]
            img = torch.from_numpy(np.array(Image.open(Path(data[split]["images"]) / im["file_name"]).convert("RGB")))
            boxes = torch.tensor([[x["bbox"][0], x["bbox"][1], x["bbox"][0] + x["bbox"][2],
                                   x["bbox"][1] + x["bbox"][3]] for x in a]).reshape(-1, 4)
            labels = torch.tensor([cat_ids.index(x["category_id"]) + 1 for x in a], dtype=torch.int64)
            items.append((im["id"], img.permute(2, 0, 1).float() / 255, boxes, labels))
        return d, items

    _, train = load("train")
    val_gt, val = load("val")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train) / 4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / 5 if s < 4 else 0.5 * (1 + math.cos(math.pi * (s - 4) / max(1, steps - 4))))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for m in model.backbone.body.modules():          # BatchNorm of the pretrained backbone in eval
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        order = torch.randperm(len(train)).tolist()
        for i in range(0, len(order), 4):
            images, targets = [], []
            for k in order[i:i + 4]:
                _, img, boxes, labels = train[k]
                if torch.rand(()) < 0.5:                   # horizontal flip
                    img, boxes = img.flip(-1), boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + \
                        torch.tensor([img.shape[-1], 0, img.shape[-1], 0])
                images.append(img)
                targets.append({"boxes": boxes, "labels": labels})
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    results = []
    with torch.inference_mode():
        for image_id, img, _, _ in val:
            o = model([img])[0]
            for (x1, y1, x2, y2), lab, s in zip(o["boxes"].tolist(), o["labels"].tolist(), o["scores"].tolist()):
                results.append({"image_id": image_id, "category_id": cat_ids[lab - 1],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return evaluate_coco(val_gt, results), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    ap.add_argument("--out", default="/tmp/det-bench")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = make_data(out / "data")
    summary, vt_wall = run_vt(data, out / "vt-run", args.epochs)
    m = summary["metrics"]
    print(f"vt train detection: AP50 {m['AP50']:.3f}  AP {m['AP']:.3f}  best epoch {summary['best_epoch']}  "
          f"wall {vt_wall:.0f} s (whole command, train {summary['train_time_s']:.0f} s)", flush=True)
    eval_out = out / "vt-eval"
    subprocess.run(["vt", "eval", "detection", "--checkpoint", str(out / "vt-run" / "checkpoints" / "best.pt"),
                    "--out", str(eval_out)], check=True, stdout=subprocess.DEVNULL)
    ev = json.loads((eval_out / "metrics.json").read_text())
    ref, ref_time = plain_torchvision(data, args.epochs)
    print(f"plain torchvision : AP50 {ref['AP50']:.3f}  AP {ref['AP']:.3f}  (last epoch)  train {ref_time:.0f} s")
    print(f"AP50 ratio vt / torchvision: {m['AP50'] / max(ref['AP50'], 1e-9):.3f}")
    print(f"vt eval from best.pt: AP {ev['AP']:.4f} vs summary {m['AP']:.4f} -> "
          f"{'reproduced' if abs(ev['AP'] - m['AP']) < 1e-6 else 'DIFFERENT'}")
    sys.exit(0 if vt_wall <= 300 and m["AP50"] >= ref["AP50"] else 1)


if __name__ == "__main__":
    main()
