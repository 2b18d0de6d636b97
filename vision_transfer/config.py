"""The config schema (pydantic), YAML recipes and dotted `key=value` overrides.

Only the CLI and the top-level API functions read a `Config`; they unpack it into plain
arguments for the task plugins and the engine.

    cfg = load_config("classification", path="configs/classification/linear_probe.yaml",
                      overrides=["train.epochs=5", "data.classes=[cat, dog]"])
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import VTError, did_you_mean

# One list per fact: the engine (engine/transfer.py) and `vt study` read these.
STRATEGIES = ("linear_probe", "finetune", "gradual_unfreeze", "lp_ft", "lora", "bitfit")   # lora, bitfit: engine/adapters.py
BN_MODES = ("train", "eval", "frozen")
SCHEDULES = ("cosine", "flat_cosine", "constant")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


def _expand(v: str | None) -> str | None:
    """`~/data` -> `/home/me/data`: shells leave a tilde inside `key=~/path` alone."""
    return os.path.expanduser(v) if isinstance(v, str) else v


class SplitConfig(_Section):
    images: str | None = None
    annotations: str | None = None
    masks: str | None = None

    _paths = field_validator("images", "annotations", "masks")(_expand)


class DataConfig(_Section):
    format: Literal["folder", "csv", "coco", "voc", "yolo", "masks"] | None = None
    root: str | None = None
    train: SplitConfig = Field(default_factory=SplitConfig)
    val: SplitConfig = Field(default_factory=SplitConfig)
    classes: list[str] | None = None
    val_split: float = Field(0.2, ge=0.0, lt=1.0)
    palette: dict[str, list[int]] | list[list[int]] | None = None   # segmentation: RGB colour per class
    num_workers: int | None = Field(None, ge=0)   # None: min(4, cores - 1)
    max_per_class: int | None = Field(None, ge=1)   # subsample the train split (stratified, seeded)
    _paths = field_validator("root")(_expand)
    split_seed: int = 0          # seeds the train/val split (data.val_split), fixed across train.seed
    # classification augmentation: random-resized crops keep at least `crop_scale` of the image
    # (raise it when the evidence is small, e.g. a crack in a solar cell); flips; 90-degree turns
    crop_scale: float = Field(0.35, gt=0.0, le=1.0)
    vflip: bool = False
    rotate90: bool = False     # classification and segmentation
    # brightness/contrast(/saturation) jitter strength, applied to half the images; 0 = off.
    # None: the task's default (classification 0.2, detection 0.15, segmentation 0: measured below smp's
    # flips-only recipe on tiles, benchmarks/segmentation_vs_smp.py)
    color_jitter: float | None = Field(None, ge=0.0, le=1.0)
    # balanced: the train split resampled each epoch (classes equally often; repeat-factor for detection)
    sampler: Literal["random", "balanced"] = "random"
    # classification: several labels per image (data.format=csv, a `labels` column "a;b" or one 0/1
    # column per class): a sigmoid head with binary cross-entropy, scored by mAP and per-class F1
    multilabel: bool = False


class ModelConfig(_Section):
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = "imagenet"
    head: str = "default"
    out_indices: list[int] | None = None
    # classification
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    hidden_dim: int | None = Field(None, ge=1)    # an MLP head with one hidden layer
    # detection
    anchor_sizes: list[list[int]] | None = None
    aspect_ratios: list[float] | None = None
    fpn_channels: int = Field(128, ge=8)
    # segmentation
    decoder_channels: list[int] | None = None
    head_weights: str | None = None   # segmentation fcn/deeplabv3: torchvision's head weights ("coco", a tag, a file)


class TransferConfig(_Section):
    """How a backbone is transferred; the one spelling of these settings (`fit` and
    `plan_transfer` read this object). None = resolved per run (`vision_transfer.defaults`)."""

    strategy: Literal[STRATEGIES] = "finetune"
    freeze_layers: int = Field(0, ge=0)
    cache_features: bool | None = None       # None: on for a classification linear probe
    backbone_lr_mult: float | None = Field(None, ge=0.0)   # None: the task's default (segmentation 0.5, else 1)
    layer_lr_decay: float | None = Field(None, gt=0.0, le=1.0)
    bn: Literal[BN_MODES] | None = None   # None: per epoch, eval while every stage is frozen, else train
    unfreeze_every: int = Field(1, ge=1)
    unfreeze_milestones: list[int] | None = None
    probe_epochs: int | None = Field(None, ge=0)   # lp_ft: None = half of train.epochs (at least 1)
    # lp_ft: every lr x this after the probe. Why lower: after the probe the head already fits the
    # features, so large steps are no longer needed to fix a random head, and it is exactly large
    # early steps that distort pretrained features (Kumar et al. 2022, "Fine-Tuning can Distort
    # Pretrained Features"; their LP-FT sweeps pick fine-tune lrs ~10x below plain fine-tuning's).
    finetune_lr_mult: float = Field(0.1, gt=0.0, le=1.0)
    # linear probe on cached features: lbfgs solves a linear head to the optimum (auto: lbfgs for a
    # linear head, sgd = the shared fit for others); probe_layers: last | all | auto | [stage, ...];
    # probe_C: the inverse L2 strength (None: chosen on val, or by k-fold CV on train: probe_select)
    probe_solver: Literal["auto", "lbfgs", "sgd"] = "auto"
    probe_layers: Literal["last", "all", "auto"] | list[int] = "last"
    probe_C: float | None = Field(None, gt=0.0)
    probe_select: Literal["auto", "val", "cv"] = "auto"


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int | Literal["auto"] = 32   # auto: the largest that fits (engine/batch_size.py)
    lr: float | Literal["auto"] | None = None   # None: the task's and strategy's default; auto: lr range test
    weight_decay: float = Field(1e-4, ge=0.0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = Field(1.0, ge=0.0)
    schedule: Literal[SCHEDULES] | None = None   # None: the task's default
    image_size: int | None = Field(None, ge=16)   # None: the task's default
    device: str = "auto"
    seed: int = 0
    resume: str | None = None                      # PATH or "auto" (out_dir/checkpoints/last.pt)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None              # None: on for CUDA
    grad_accum: int = Field(1, ge=1)
    early_stopping: int | None = Field(None, ge=1)  # patience in epochs on the monitored metric
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment: bool = True
    class_weights: list[float] | Literal["auto", "inverse", "effective"] | None = None   # auto = inverse frequency
    dice_weight: float = Field(1.0, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0)

    @field_validator("batch_size", "lr", mode="before")
    @classmethod
    def _positive_or_auto(cls, v: Any, info: Any) -> Any:
        if v is None or v == "auto":
            return v
        if isinstance(v, str):   # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        if info.field_name == "batch_size":
            ok = ok and float(v).is_integer()
        if not ok:
            kind = "a whole number >= 1" if info.field_name == "batch_size" else "a number > 0"
            raise ValueError(f"must be {kind} or auto")
        return v
    ema: float | None = Field(None, gt=0.0, lt=1.0)   # decay of an EMA of the weights, e.g. 0.999 (engine/ema.py)
    loss: Literal["ce", "focal"] = "ce"            # classification and segmentation
    focal_gamma: float = Field(2.0, ge=0.0)        # train.loss=focal: (1 - p)^gamma (Lin et al. 2017)


class RunConfig(_Section):
    out_dir: str | None = None   # None: runs/<task>-<timestamp>

    _paths = field_validator("out_dir")(_expand)
    tensorboard: bool = True      # when tensorboard is installed


class LrFindConfig(_Section):
    """`vt lr-find` and `train.lr=auto`: the range of the exponential sweep of the head's lr."""
    start_lr: float = Field(1e-7, gt=0.0)
    end_lr: float = Field(1.0, gt=0.0)
    num_steps: int = Field(100, ge=5)


class StudyConfig(_Section):
    strategies: list[str] = Field(default_factory=lambda: ["linear_probe", "finetune", "scratch"])
    samples_per_class: list[int] = Field(default_factory=lambda: [5, 20])
    seeds: int = Field(2, ge=1)
    freeze_layers: list[int] | None = None
    backbones: list[str] | None = None   # NAME or NAME@WEIGHTS (as rank.backbones): the strategies once per backbone
    probe_layers: list[int | str | list[int]] | None = None   # linear probes per stage set: [0, 1, 2, all]
    adapt: list[str] | None = None    # domain-adaptation axis: [none, adabn, dann, ...] (needs adapt.target.*)
    # a weights axis: every strategy (but scratch) once per entry: imagenet, none, a file (vt pretrain's backbone)
    weights: list[str] | None = None


class RankConfig(_Section):
    """`vt rank`: candidates `NAME` or `NAME@WEIGHTS` (`@none`: random init); None = those with offline weights."""
    backbones: list[str] | None = None
    max_per_class: int | None = Field(200, ge=2)   # LogME is stable with a few hundred images; keeps it fast


ADAPT_METHODS = ("none", "dann", "cdan", "mmd", "adabn")


class AdaptTargetConfig(_Section):
    images: str | None = None          # unlabelled target-domain images, searched recursively
    val: str | SplitConfig | None = None   # labelled target split in the task's layout (a folder of class
    #                                        folders for classification; .images + .annotations / .masks)
    _paths = field_validator("images")(_expand)


class AdaptConfig(_Section):
    method: Literal[ADAPT_METHODS] = "none"
    target: AdaptTargetConfig = Field(default_factory=AdaptTargetConfig)
    weight: float = Field(1.0, ge=0.0)     # trade-off of the domain loss against the task loss
    select: Literal["source_val", "snd"] = "source_val"   # what picks best.pt; snd: label-free (classification)
    # BatchNorm in the target pass: batch = the target batch's own statistics, running averages
    # updated by both domains (Ganin et al.; digits -> digits-M: DANN 0.53 vs 0.29 with running);
    # running = the source's running statistics, left alone (as at test time)
    target_bn: Literal["batch", "running"] = "batch"
    diagnostics: bool = True               # proxy A-distance before/after and the PCA plot
    diagnostic_images: int = Field(400, ge=10)   # per domain, for those diagnostics


class MultitaskEntryConfig(_Section):
    """One head of `vt train multitask`: its task, that task's `data.*` keys, its `model.*` head keys,
    its loss keys (`train.*`: image_size and the task's loss options) and its loss weight."""

    name: str
    task: str
    data: dict = Field(default_factory=dict)
    model: dict = Field(default_factory=dict)
    train: dict = Field(default_factory=dict)
    weight: float = Field(1.0, ge=0.0)


class MultitaskConfig(_Section):
    """`vt train multitask`: several heads on one shared `model.backbone` (vision_transfer/multitask)."""

    tasks: list[MultitaskEntryConfig] = Field(default_factory=list)
    # round_robin: every step a batch of every entry; proportional: mixed batches, entries as often as their size
    sampling: Literal["round_robin", "proportional"] = "round_robin"
    balance: Literal["fixed", "uncertainty"] = "fixed"   # uncertainty: Kendall et al. 2018, learned log-variances
    monitor: str = "mean_score"   # mean of each head's monitored metric, or one of them: NAME/METRIC
    head: str | None = None       # vt eval / predict / export multitask: the entry to run (alias --task)


class Config(_Section):
    task: str   # a name in the TASKS registry (vision_transfer.plugins)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    lr_find: LrFindConfig = Field(default_factory=LrFindConfig)
    multitask: MultitaskConfig = Field(default_factory=MultitaskConfig)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from .plugins import task_names

        names = task_names()
        if v not in names:
            raise ValueError(f"unknown task {v!r}{did_you_mean(v, names)}; valid: {', '.join(names)}")
        return v


class PretrainConfig(_Section):
    """`vt pretrain`: the self-supervised method and its two-view augmentation (vision_transfer/pretrain)."""

    method: str = "simclr"                 # simclr | byol | rotation
    temperature: float = Field(0.2, gt=0.0)   # simclr: NT-Xent temperature
    proj_dim: int = Field(128, ge=8)          # projection output (simclr 128, byol predictor/projection)
    hidden_dim: int = Field(512, ge=8)        # projector / predictor hidden width
    ema: float = Field(0.99, gt=0.0, lt=1.0)  # byol: target = ema * target + (1 - ema) * online, per step
    # two-view augmentation; each strength is a key (0 switches an op off)
    crop_scale: float = Field(0.25, gt=0.0, le=1.0)   # random-resized crops keep crop_scale..1 of the area
    hflip: bool = True
    vflip: bool = True           # no "up" in cells, wafers, tiles (ignored by rotation: it would make 0/180 ambiguous)
    rotate90: bool = False       # (ignored by rotation)
    color_jitter: float = Field(0.4, ge=0.0, le=1.0)  # brightness/contrast/saturation strength, on 80 % of views
    hue: float = Field(0.05, ge=0.0, le=0.5)
    grey: float = Field(0.2, ge=0.0, le=1.0)     # probability of a grey view (a no-op on grey images)
    blur: float = Field(0.5, ge=0.0, le=1.0)     # probability of a Gaussian blur
    blur_sigma: float = Field(1.5, gt=0.0)       # its largest sigma in pixels of the output view
    knn_val: str | None = None   # a small labelled folder (class subfolders): kNN accuracy per epoch
    knn_k: int = Field(20, ge=1)
    monitor_images: int = Field(512, ge=16)   # unlabelled images embedded per epoch for rank / uniformity

    _paths = field_validator("knn_val")(_expand)


class PretrainTrainConfig(TrainConfig):
    """`train.*` for `vt pretrain`: the same keys, defaults sized for minutes on two CPU cores."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=2)


class PretrainRunConfig(_Section):
    """Everything `vt pretrain` reads: the usual sections plus `pretrain.*` (labels are ignored)."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: PretrainTrainConfig = Field(default_factory=PretrainTrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts: `train.epochs`, `data.train.images`, ..."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += valid_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """`["train.epochs=5", "data.classes=[a, b]"]` -> nested dict; values parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise VTError(f"override {item!r} is not key=value (example: train.epochs=5)")
        key, _, raw = item.partition("=")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise VTError(f"override {key}: value {raw!r} is not valid YAML ({str(e).splitlines()[0]})") from None
        set_dotted(tree, key.strip(), value)
    return tree


def set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise VTError(f"config key {key!r}: {p!r} is a value, not a section")
    node[parts[-1]] = value


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise VTError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.constructor.ConstructorError as e:   # !!python/object and friends: safe_load never builds them
        mark = f" (line {e.problem_mark.line + 1})" if e.problem_mark else ""
        raise VTError(f"config file {path}{mark}: the tag {str(e.problem or '').split()[-1] if e.problem else ''} "
                      "is refused: recipes hold plain values (numbers, strings, lists, mappings) only") from None
    except yaml.YAMLError as e:
        raise VTError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise VTError(f"config file {path} must hold a mapping of sections (data:, model:, train:, ...)")
    return data


def build_config(task: str, tree: dict) -> Config:
    tree = dict(tree)
    file_task = tree.pop("task", task)
    if file_task != task:
        raise VTError(f"the config is for task {file_task!r} but the command is for {task!r}")
    try:
        return Config(task=task, **tree)
    except ValidationError as e:
        raise VTError(_explain(e)) from None
    except TypeError as e:
        raise VTError(f"config: {e}") from None


def _explain(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        return f"unknown config key {key!r}{did_you_mean(key, valid_keys())}{more}"
    return f"config key {key!r}: {err['msg']} (got {err.get('input')!r}){more}"


def load_config(task: str, *, path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML recipe <- `key=value` overrides, validated."""
    tree = read_yaml(path) if path else {}
    return build_config(task, merge(tree, parse_overrides(overrides)))


def replace(cfg: Config, **sections: dict) -> Config:
    """A copy of `cfg` with fields of some sections changed, validated:
    `replace(cfg, train={"lr": 1e-3}, transfer={"strategy": "finetune"})`."""
    tree = cfg.model_dump(mode="json")
    task = tree.pop("task")
    return build_config(task, merge(tree, sections))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
