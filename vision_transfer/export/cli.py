"""The `vt export` sub-command: its parser (torch-free) and its command."""
from __future__ import annotations

import argparse

FORMATS = ("onnx", "torchscript")


def add_export_parser(sub) -> None:
    """`vt export TASK --checkpoint CKPT --format onnx|torchscript --out FILE [--image-size N] [--dynamic-batch]`."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX / TorchScript and check parity with PyTorch")
    from ..plugins import task_names

    p.add_argument("task", choices=task_names(), metavar="TASK")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by vt train (best.pt / last.pt)")
    p.add_argument("--format", required=True, metavar="FORMAT", help=f"one of: {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, metavar="FILE", help="the model file; FILE.json is written beside it")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: the training size); detection: the size the detector resizes to")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="free batch size (classification, segmentation); detection graphs take any image size")
    p.add_argument("--batch-size", type=int, default=1, help="the batch size of the exported graph (default 1)")
    p.add_argument("--task", dest="head", default=None, metavar="NAME",
                   help="multitask: the head to export with the backbone (alias of multitask.head)")


def export_command(args: argparse.Namespace) -> int:
    from .exporter import export_checkpoint, sidecar_path

    side = export_checkpoint(args.task, checkpoint=args.checkpoint, fmt=args.format, out=args.out,
                             image_size=args.image_size, dynamic=args.dynamic_batch, batch=args.batch_size,
                             head=_head(args))
    diffs = ", ".join(f"{k} {v:.2g}" for k, v in side["parity"].items())
    print(f"exported {args.task} -> {args.out} ({args.format}, {side['io']} input {side['input_layout']}); "
          f"largest |exported - PyTorch|: {diffs}; sidecar {sidecar_path(args.out)}")
    return 0


def _head(args: argparse.Namespace) -> str | None:
    """--task NAME, else the key multitask.head=NAME."""
    from ..multitask.checkpoint import head_of

    return head_of(getattr(args, "head", None), list(getattr(args, "overrides", None) or []))[0]
