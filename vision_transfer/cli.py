"""The `vt` command. It parses, unpacks config into plain arguments and calls the Python API.

One grammar for every command: `key=value` config overrides may stand anywhere after the command
(and its task), before, between or after the flags; a token is an override when it starts with a
dotted config key and `=` (`train.epochs=5`, `"data.classes=[a, b]"`). Flags that duplicate a
config key are aliases of it (`--device` = `train.device`, `--image-size` = `train.image_size`...),
and a key or flag a command does not use is an error that names the command.

Imports are lazy: `vt eval detection --gt ... --predictions ...` and `vt backbones` must not pay
for importing torch when they do not need it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from .errors import VTError

# `section.key=...` (a dotted name, then "="): what a config override looks like on the command line
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")

# The config keys each command reads ("section." = the whole section); None = every key.
COMMAND_KEYS: dict[str, tuple[str, ...] | None] = {
    "train": None,
    "study": None,
    "eval": ("data.", "train.batch_size", "train.device", "train.seed", "train.amp", "multitask.head"),
    "predict": ("train.device", "train.batch_size", "train.amp", "multitask.head"),
    "embed": ("model.backbone", "model.weights", "train.image_size", "train.batch_size", "train.device",
              "data.num_workers"),
    "similar": ("model.backbone", "model.weights", "train.image_size", "train.device"),
    "cluster": ("train.seed",),
    "demo": ("train.device",),
    "heads": (),
    "export": ("multitask.head",),
    "convert": (),
    "adapt": ("train.batch_size", "train.device"),
    "rank": ("data.", "model.", "train.", "rank.", "run."),
    "doctor": ("data.", "model.", "train.image_size", "train.seed", "run.out_dir"),
    "backbones": (),
}

# Flags that are aliases of config keys: (flag, config key, type, help).
_ALIASES = {
    "--device": ("train.device", str, "device: auto | cpu | cuda | cuda:N (alias of train.device)"),
    "--image-size": ("train.image_size", int, "input size in pixels (alias of train.image_size)"),
    "--batch-size": ("train.batch_size", int, "images per batch (alias of train.batch_size)"),
    "--backbone": ("model.backbone", str, "registry backbone name (alias of model.backbone)"),
    "--weights": ("model.weights", str, "imagenet | TAG | FILE | hf-hub:ID | none (alias of model.weights)"),
    "--seed": ("train.seed", int, "random seed (alias of train.seed)"),
}
_TRAIN_SECTIONS_NOT_FOR = {"train": ("study.",)}   # `vt train` ignores the study axes: say so


def _task_names() -> list[str]:
    from .plugins import task_names

    return task_names()


def _add_task(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=_task_names(), metavar="TASK", help=f"one of: {', '.join(_task_names())}")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="YAML recipe (only what differs from the defaults)")


def _add_head(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", dest="head", default=None, metavar="NAME",
                   help="multitask: the head (entry name) to run (alias of multitask.head)")


def _alias(p: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        key, typ, text = _ALIASES[flag]
        p.add_argument(flag, type=typ, default=None, help=text)


def _sub(sub, name: str, text: str, *, keys: bool = True) -> argparse.ArgumentParser:
    desc = text + ("  Config overrides key=value may stand anywhere (values parsed as YAML: train.epochs=5 "
                   "'data.classes=[a, b]')." if keys else "")
    return sub.add_parser(name, help=text, description=desc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vt", description="vision_transfer: transfer learning for vision.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(sub, "backbones", "list registered backbones, their weights and offline availability", keys=False)
    p.add_argument("pattern", nargs="?", help="substring or shell wildcard, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, family, weights, offline}")

    p = _sub(sub, "heads", "list the registered heads of every task (or of TASK)", keys=False)
    p.add_argument("task", nargs="?", choices=_task_names(), metavar="TASK")
    p.add_argument("--json", action="store_true", help="print JSON {task: [{name, default, doc}]}")

    p = _sub(sub, "train", "train a model: vt train TASK [-c CONFIG] [key=value ...]")
    _add_task(p)
    _add_config(p)
    _alias(p, "--device")

    p = _sub(sub, "eval", "evaluate a checkpoint, or score a COCO results file (detection)")
    _add_task(p)
    p.add_argument("--checkpoint", help="a checkpoint written by vt train (best.pt / last.pt)")
    p.add_argument("--gt", help="model-free: COCO ground-truth annotations JSON")
    p.add_argument("--predictions", help="model-free: COCO results JSON (any tool's)")
    p.add_argument("--iou-type", default=None, choices=("bbox", "segm"), help="model-free: what to score (bbox)")
    p.add_argument("--backend", default=None, choices=("faster-coco-eval", "pycocotools"),
                   help="model-free: COCO evaluation backend (default: the fastest with pycocotools parity)")
    p.add_argument("--out", help="output folder for metrics.json and reports")
    _add_head(p)
    _add_config(p)
    _alias(p, "--device", "--batch-size")

    p = _sub(sub, "predict", "run a checkpoint on images: writes predictions.json and drawings")
    _add_task(p)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--score-threshold", type=float, default=None, help="detection: hide boxes below this; multi-label classification: "
                   "labels scoring at least this (0.5)")
    p.add_argument("--topk", type=int, default=None, help="classification: classes listed per image (5)")
    _add_head(p)
    _alias(p, "--device", "--batch-size")

    p = _sub(sub, "study", "strategies x samples per class x seeds -> study.json/.md/.png")
    _add_task(p)
    _add_config(p)
    _alias(p, "--device")

    p = _sub(sub, "embed", "embed every image below a folder into a similarity index")
    p.add_argument("image_dir")
    p.add_argument("--checkpoint", help="use the backbone of a checkpoint written by vt train")
    p.add_argument("--out", required=True, metavar="INDEX_DIR")
    p.add_argument("--layers", default=None, help="stages pooled and concatenated: last (default), all, or e.g. 2,3,4")
    _alias(p, "--backbone", "--weights", "--image-size", "--batch-size", "--device")

    p = _sub(sub, "similar", "nearest neighbours of query images in an index")
    p.add_argument("--index", required=True, metavar="INDEX_DIR")
    p.add_argument("queries", nargs="+", metavar="QUERY")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--search", default="auto", choices=("auto", "exact", "ivf", "hnsw"))
    p.add_argument("--checkpoint", help="embed the queries with this checkpoint's backbone (default: the index's)")
    p.add_argument("--out", required=True)
    _alias(p, "--backbone", "--weights", "--image-size", "--device")

    p = _sub(sub, "cluster", "k-means over an index: montage per cluster and clusters.json")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--out", required=True)
    _alias(p, "--seed")

    p = _sub(sub, "demo", "the main job: ELPV solar cells, probe vs fine-tune vs scratch, offline")
    p.add_argument("--quick", action="store_true", help="a smaller budget (about a minute)")
    p.add_argument("--out", default="vt-demo", help="output folder (default ./vt-demo)")
    _alias(p, "--device")

    p = _sub(sub, "doctor", "dataset report before training: counts, bad and odd images, duplicates, leakage, "
                            "boxes vs anchors, mask values (doctor.json, doctor.html)")
    _add_task(p)
    p.add_argument("--out", help="output folder (default: run.out_dir, else ./doctor-TASK)")
    _add_config(p)

    p = _sub(sub, "adapt", "AdaBN on a checkpoint: re-estimate BatchNorm statistics on target images")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by vt train (best.pt / last.pt)")
    p.add_argument("--target", required=True, metavar="DIR", help="unlabelled target-domain images (recursive)")
    p.add_argument("--out", required=True, metavar="FILE.pt", help="the adapted checkpoint to write")
    _alias(p, "--batch-size", "--device")

    p = _sub(sub, "pretrain", "self-supervised pretraining on unlabelled images -> RUN/backbone.safetensors")
    p.add_argument("image_dir", nargs="?", metavar="IMAGE_DIR", help="folder of images (any depth; labels ignored)")
    _add_config(p)
    _alias(p, "--device")

    from .export.cli import add_export_parser   # torch-free

    add_export_parser(sub)

    p = _sub(sub, "lr-find", "learning-rate range test on your data: lr_find.png and a suggested train.lr")
    _add_task(p)
    _add_config(p)
    _alias(p, "--device")

    formats = ("coco", "voc", "yolo", "masks")
    p = _sub(sub, "convert", "convert detection / segmentation annotations: coco | voc | yolo | masks", keys=False)
    p.add_argument("--from", dest="src", required=True, choices=formats)
    p.add_argument("--to", dest="dst", required=True, choices=formats)
    p.add_argument("input", metavar="IN", help="a folder in the --from layout (coco: also the JSON file)")
    p.add_argument("output", metavar="OUT", help="the folder to write (images are hard-linked into it)")

    p = _sub(sub, "rank", "score candidate backbones on your labelled data without training (LogME)")
    _add_task(p)
    _add_config(p)
    _alias(p, "--device")
    return parser


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(argv without overrides, the `key=value` overrides in order). The command name itself is
    never an override; a token right after a flag that takes a value is that flag's value."""
    rest, overrides = [], []
    for i, tok in enumerate(argv):
        if i > 0 and _OVERRIDE.match(tok) and not _takes_value(argv[i - 1]):
            overrides.append(tok)
        else:
            rest.append(tok)
    return rest, overrides


def _takes_value(prev: str) -> bool:
    return prev.startswith("-") and "=" not in prev and prev not in ("--json", "--quick", "-h", "--help")


def check_keys(command: str, overrides: list[str]) -> None:
    """A key the command does not read is an error naming the command and what it reads."""
    allowed = COMMAND_KEYS.get(command, None)
    banned = _TRAIN_SECTIONS_NOT_FOR.get(command, ())
    for item in overrides:
        key = item.partition("=")[0].strip()
        if any(key.startswith(b) for b in banned) or (allowed is not None and not _allowed(key, allowed)):
            what = ", ".join(allowed) if allowed else "no config keys"
            hint = "; study.* keys are for vt study" if banned and key.startswith("study.") else ""
            raise VTError(f"vt {command} does not use {key}{hint} (it takes: {what})")


def _allowed(key: str, allowed: tuple[str, ...]) -> bool:
    return any(key == a or (a.endswith(".") and key.startswith(a)) for a in allowed)


def merge_aliases(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """Each alias flag given becomes its config key; the same setting given twice is an error.
    The resolved value is written back on `args` (e.g. `args.device`) for commands that read it."""
    from .config import parse_overrides

    given = {o.partition("=")[0].strip(): o for o in overrides}
    out = list(overrides)
    for flag, (key, _typ, _text) in _ALIASES.items():
        dest = flag.lstrip("-").replace("-", "_")
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value is not None:
            if key in given:
                raise VTError(f"{flag} and {key} name the same setting: give one of them")
            out.append(f"{key}={value}")
        elif key in given:
            section, _, name = key.partition(".")
            setattr(args, dest, parse_overrides([given[key]])[section][name])
    return out


def _run(args: argparse.Namespace, overrides: list[str]) -> int:
    cmd = args.command
    check_keys(cmd, overrides)
    overrides = merge_aliases(args, overrides)
    args.overrides = overrides   # for the commands that load their own config (doctor, rank, pretrain, lr-find)
    if cmd == "backbones":
        from .backbones.listing import print_backbones

        return print_backbones(args.pattern, as_json=args.json)
    if cmd == "heads":
        from .heads import print_heads

        return print_heads(args.task, as_json=args.json)
    if cmd == "eval":
        return _eval(args, overrides)
    if cmd in ("train", "study"):
        from .config import load_config

        cfg = load_config(args.task, path=args.config, overrides=overrides)
        if cmd == "train":
            from .api import train_from_config

            train_from_config(cfg)
        else:
            from .studies import study_from_config

            study_from_config(cfg)
        return 0
    if cmd == "predict":
        from .api import predict
        from .multitask.checkpoint import head_of

        head, _ = head_of(args.head, overrides)
        options = {k: v for k, v in (("score_threshold", args.score_threshold), ("topk", args.topk),
                                     ("head", head)) if v is not None}
        predict(args.task, checkpoint=args.checkpoint, inputs=args.inputs, out=args.out,
                device=args.device or "auto", batch_size=args.batch_size or 8, **options)
        return 0
    if cmd in ("embed", "similar", "cluster"):
        from .similarity import cli as sim_cli

        args.device = getattr(args, "device", None) or "auto"
        if cmd == "embed":
            args.batch_size = args.batch_size or 32
        if cmd == "cluster":
            args.seed = args.seed or 0
        return getattr(sim_cli, f"{cmd}_command")(args)
    if cmd == "adapt":
        from .adapt.adabn import adapt_command

        args.batch_size, args.device = args.batch_size or 32, args.device or "auto"
        return adapt_command(args)
    if cmd == "pretrain":
        from .pretrain.run import pretrain_command

        return pretrain_command(args)
    if cmd == "export":
        from .export.cli import export_command

        return export_command(args)
    if cmd == "convert":
        from .data.convert import convert_command

        return convert_command(args)
    if cmd == "lr-find":
        from .tuning import lr_find_command

        return lr_find_command(args)
    if cmd == "rank":
        from .ranking.rank import rank_command

        return rank_command(args)
    if cmd == "doctor":
        from .doctor import doctor_command

        return doctor_command(args)
    if cmd == "demo":
        from .demo import run_demo

        run_demo(quick=args.quick, out=args.out, device=args.device or "auto")
        return 0
    raise AssertionError(cmd)


def _eval(args: argparse.Namespace, overrides: list[str]) -> int:
    model_free = bool(args.gt or args.predictions)
    if model_free:
        if args.task != "detection" or not (args.gt and args.predictions):
            raise VTError("model-free evaluation is `vt eval detection --gt GT.json --predictions RESULTS.json`")
        if args.checkpoint or overrides or args.config:
            raise VTError("model-free evaluation (--gt, --predictions) takes no --checkpoint, -c or config keys")
        from .evaluation.coco_cli import eval_results_file

        return eval_results_file(gt=args.gt, predictions=args.predictions, out=args.out,
                                 iou_type=args.iou_type or "bbox", backend=args.backend)
    if not args.checkpoint:
        raise VTError("vt eval needs --checkpoint CKPT (or, for detection, --gt and --predictions)")
    for flag, value in (("--backend", args.backend), ("--iou-type", args.iou_type)):
        if value is not None:
            raise VTError(f"vt eval --checkpoint does not use {flag} (it is for model-free --gt/--predictions)")
    from .api import evaluate_checkpoint
    from .config import load_config

    load_config(args.task, path=args.config, overrides=overrides)   # validates the keys before loading anything
    evaluate_checkpoint(args.task, checkpoint=args.checkpoint, config=args.config, overrides=overrides, out=args.out,
                        head=args.head)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = split_overrides(argv)
    args, extra = build_parser().parse_known_args(rest)
    if extra:   # e.g. `train.epochs 5`: say what an override looks like, in one line
        print(f"vt {args.command}: error: {extra[0]!r} is not key=value (example: train.epochs=5) nor a flag of "
              f"vt {args.command} (see vt {args.command} --help)", file=sys.stderr)
        return 2
    try:
        return _run_stoppable(args, overrides)
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
    except (OSError, RuntimeError) as e:  # known fatal faults in one line (disk full, a dead loader worker)
        from .engine.signals import explain_fault

        message = explain_fault(e)
        if message is None or os.environ.get("VT_DEBUG"):
            raise
        print(f"vt {args.command}: error: {message}", file=sys.stderr)
        return 2


# Long commands stop cleanly on SIGTERM / Ctrl-C (engine/signals.py): a checkpoint at the step boundary.
STOPPABLE = ("train", "study", "embed", "pretrain")


def _run_stoppable(args: argparse.Namespace, overrides: list[str]) -> int:
    """Exit 128 + signal with one line when a long command is stopped."""
    if args.command not in STOPPABLE:
        return _run(args, overrides) or 0
    from .engine.signals import StopRequested, graceful_stop

    try:
        with graceful_stop(defer=args.command != "embed"):
            return _run(args, overrides) or 0
    except StopRequested as stop:
        saved = getattr(stop, "saved", None)
        how = "rerun the same command to continue" if args.command == "study" else "rerun with train.resume=auto"
        saved = f"; saved {saved} at the step boundary: {how}" if saved else "; nothing was written"
        print(f"vt {args.command}: {stop}{saved}", file=sys.stderr)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
