"""The `vt` command. It parses, unpacks config into plain arguments and calls the Python API.

Imports are lazy: `vt eval detection --gt ... --predictions ...` and `vt backbones` must not pay
for importing torch when they do not need it.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .errors import VTError

TASK_NAMES = ("classification", "detection", "segmentation")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML recipe (only what differs from the defaults)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, values parsed as YAML: train.epochs=5 'data.classes=[a, b]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vt", description="vision_transfer: transfer learning for vision.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list registered backbones, their weights and offline availability")
    p.add_argument("pattern", nargs="?", help="substring or shell wildcard, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, family, weights, offline}")

    p = sub.add_parser("train", help="train a model: vt train TASK [-c CONFIG] [key=value ...]")
    p.add_argument("task", choices=TASK_NAMES)
    _add_config_args(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint, or score a COCO results file (detection)")
    p.add_argument("task", choices=TASK_NAMES)
    p.add_argument("--checkpoint", help="a checkpoint written by vt train (best.pt / last.pt)")
    p.add_argument("--gt", help="model-free: COCO ground-truth annotations JSON")
    p.add_argument("--predictions", help="model-free: COCO results JSON (any tool's)")
    p.add_argument("--iou-type", default="bbox", choices=("bbox", "segm"), help="model-free: what to score")
    p.add_argument("--backend", default=None, choices=("faster-coco-eval", "pycocotools"),
                   help="COCO evaluation backend (default: the fastest with pycocotools parity)")
    p.add_argument("--out", help="output folder for metrics.json and reports")
    _add_config_args(p)

    p = sub.add_parser("predict", help="run a checkpoint on images: writes predictions.json and drawings")
    p.add_argument("task", choices=TASK_NAMES)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--score-threshold", type=float, default=0.5, help="detection: hide boxes below this score")
    p.add_argument("--device", default="auto")
    p.add_argument("--topk", type=int, default=5, help="classification: classes listed per image")

    p = sub.add_parser("study", help="strategies x samples per class x seeds -> study.json/.md/.png")
    p.add_argument("task", choices=TASK_NAMES)
    _add_config_args(p)

    p = sub.add_parser("embed", help="embed every image below a folder into a similarity index")
    p.add_argument("image_dir")
    p.add_argument("--backbone", help="registry name (default tf_efficientnet_lite0)")
    p.add_argument("--weights", default=None, help="imagenet | TAG | FILE | hf-hub:ID | none")
    p.add_argument("--checkpoint", help="use the backbone of a checkpoint written by vt train")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, metavar="INDEX_DIR")

    p = sub.add_parser("similar", help="nearest neighbours of query images in an index")
    p.add_argument("--index", required=True, metavar="INDEX_DIR")
    p.add_argument("queries", nargs="+", metavar="QUERY")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--search", default="auto", choices=("auto", "exact", "ivf", "hnsw"))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)

    p = sub.add_parser("cluster", help="k-means over an index: montage per cluster and clusters.json")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("demo", help="the main job: ELPV solar cells, probe vs fine-tune vs scratch, offline")
    p.add_argument("--quick", action="store_true", help="a smaller budget (about a minute)")
    p.add_argument("--out", default="vt-demo", help="output folder (default ./vt-demo)")
    p.add_argument("--device", default="auto")
    _add_lr_find_parser(sub)
    _add_convert_parser(sub)
    return parser


def _add_convert_parser(sub) -> None:
    formats = ("coco", "voc", "yolo", "masks")
    p = sub.add_parser("convert", help="convert detection / segmentation annotations: coco | voc | yolo | masks")
    p.add_argument("--from", dest="src", required=True, choices=formats)
    p.add_argument("--to", dest="dst", required=True, choices=formats)
    p.add_argument("input", metavar="IN", help="a folder in the --from layout (coco: also the JSON file)")
    p.add_argument("output", metavar="OUT", help="the folder to write (images are hard-linked into it)")


def _add_lr_find_parser(sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test on your data: lr_find.png and a suggested train.lr")
    p.add_argument("task", choices=TASK_NAMES)
    _add_config_args(p)


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "backbones":
        from .backbones.listing import print_backbones

        return print_backbones(args.pattern, as_json=args.json)
    if cmd == "eval" and (args.gt or args.predictions):
        if args.task != "detection" or not (args.gt and args.predictions):
            raise VTError("model-free evaluation is `vt eval detection --gt GT.json --predictions RESULTS.json`")
        from .evaluation.coco_cli import eval_results_file

        return eval_results_file(gt=args.gt, predictions=args.predictions, out=args.out,
                                 iou_type=args.iou_type, backend=args.backend)
    if cmd in ("train", "eval", "study"):
        from .config import load_config

        cfg = load_config(args.task, path=args.config, overrides=args.overrides)  # validates eval's keys too
        if cmd == "train":
            from .api import train_from_config

            train_from_config(cfg)
            return 0
        if cmd == "study":
            from .engine.study import study_from_config

            study_from_config(cfg)
            return 0
        if not args.checkpoint:
            raise VTError("vt eval needs --checkpoint CKPT (or, for detection, --gt and --predictions)")
        from .api import evaluate_checkpoint

        evaluate_checkpoint(args.task, checkpoint=args.checkpoint, config=args.config, overrides=args.overrides,
                            out=args.out)
        return 0
    if cmd == "predict":
        from .api import predict

        predict(args.task, checkpoint=args.checkpoint, inputs=args.inputs, out=args.out,
                score_threshold=args.score_threshold, device=args.device, topk=args.topk)
        return 0
    if cmd in ("embed", "similar", "cluster"):
        from .similarity import cli as sim_cli

        return getattr(sim_cli, f"{cmd}_command")(args)
    if cmd == "convert":
        from .data.convert import convert_command

        return convert_command(args)
    if cmd == "lr-find":
        from .tuning import lr_find_command

        return lr_find_command(args)
    if cmd == "demo":
        from .demo import run_demo

        run_demo(quick=args.quick, out=args.out, device=args.device)
        return 0
    raise AssertionError(cmd)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args) or 0
    except VTError as e:
        print(f"vt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vt {args.command}: interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as e:  # a path the user gave that vanished under us
        if os.environ.get("VT_DEBUG"):
            raise
        print(f"vt {args.command}: error: no such file: {e.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
