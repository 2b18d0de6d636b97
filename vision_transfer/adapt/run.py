"""One adapted training run: what `api.train_from_config` calls when `adapt.*` is set.

    adaptation = prepare_adaptation(cfg, task=task, splits=splits, image_size=..., runtime=rt)
    fit_task, plan = adaptation.wrap(plan)            # before fit
    summary = adaptation.finish(summary, out_dir=...)  # after fit, on the main process

`wrap` returns the task and plan `fit` trains (an `AdaptingTask`; for dann / cdan / mmd an
`AdaptModule` whose export is the task's model); `finish` applies AdaBN to best.pt where asked,
splits the target-val numbers into `target_metrics`, and writes the diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import VTError
from ..task import DataSplits, Task, TrainingPlan, find_backbone
from .data import EndlessLoader, target_dataset, target_paths, target_val_split
from .diagnostics import embedding_plot, pooled_features, proxy_a_distance, snd, source_paths, subsample
from .trainer import TRAINED, AdaptingTask, AdaptModule, total_steps

CONDITIONAL_TASKS = ("classification",)   # tasks whose model returns class logits (N, K): cdan, snd
TARGET_PREFIX = "target_"


@dataclass
class Adaptation:
    cfg: Any                  # the run's Config
    task: Task
    splits: DataSplits
    image_size: int
    runtime: Any
    target: list[Path] = field(default_factory=list)
    target_val: Any = None
    before: tuple[np.ndarray, np.ndarray] | None = None
    _preprocessing: Any = None

    @property
    def method(self) -> str:
        return self.cfg.adapt.method

    def wrap(self, plan: TrainingPlan) -> tuple[Task, TrainingPlan]:
        """The task and plan fit trains; records the "before" features for the diagnostics."""
        a, rt = self.cfg.adapt, self.runtime
        model = plan.export or plan.model
        self._preprocessing = find_backbone(model).preprocessing
        if self.method in TRAINED and plan.export is not None:
            raise VTError(f"adapt.method={self.method} trains the backbone, but this run trains a head on cached "
                          "features: use transfer.strategy=finetune (or lp_ft), or transfer.cache_features=false")
        if a.diagnostics and self.target and rt.is_main:
            self.before = self._features(model)
        loader = None
        if self.method in TRAINED:
            loader = EndlessLoader(self._target_data(augment=True), batch_size=max(1, self.cfg.train.batch_size // rt.world_size),
                                   seed=self.cfg.train.seed + 1, rank=rt.rank, world_size=rt.world_size,
                                   num_workers=self.cfg.data.num_workers or 0)
            steps = total_steps(len(plan.train), batch_size=self.cfg.train.batch_size, world_size=rt.world_size,
                                epochs=self.cfg.train.epochs)
            module = AdaptModule(model, self.task, method=self.method, num_classes=len(self.splits.classes),
                                 total_steps=steps, weight=a.weight, seed=self.cfg.train.seed,
                                 target_bn=a.target_bn)
            plan = TrainingPlan(model=module, train=plan.train, val=plan.val, export=model)
        task = AdaptingTask(self.task, target=loader, extra_eval=self._extra_eval, monitor=self._monitor())
        return task, plan

    def _monitor(self) -> str | None:
        return "snd" if self.cfg.adapt.select == "snd" else None

    def _target_data(self, *, augment: bool, paths: list[Path] | None = None):
        return target_dataset(paths if paths is not None else self.target, image_size=self.image_size,
                              preprocessing=self._preprocessing, augment=augment, seed=self.cfg.train.seed)

    def _features(self, model) -> tuple[np.ndarray, np.ndarray]:
        n, seed = self.cfg.adapt.diagnostic_images, self.cfg.train.seed
        bb = find_backbone(model)
        src = self._target_data(augment=False, paths=subsample(source_paths(self.splits.train), n, seed))
        tgt = self._target_data(augment=False, paths=subsample(self.target, n, seed))
        dev = self.runtime.device
        return pooled_features(bb, src, device=dev), pooled_features(bb, tgt, device=dev)

    def _extra_eval(self, model, *, device, classes, amp_dtype=None) -> dict[str, Any]:
        """Per epoch: the task's metrics on the labelled target split (prefixed target_) and SND."""
        out: dict[str, Any] = {}
        if self.target_val is not None:
            loader = DataLoader(self.target_val, batch_size=self.cfg.train.batch_size, shuffle=False,
                                collate_fn=self.task.collate, num_workers=0)
            m = self.task.evaluate(model, loader, device=device, classes=classes, amp_dtype=amp_dtype)
            out.update({TARGET_PREFIX + k: v for k, v in m.items() if not k.startswith("_")})
        if self.target and self.task.name in CONDITIONAL_TASKS:
            data = self._target_data(augment=False, paths=subsample(self.target, self.cfg.adapt.diagnostic_images, 0))
            loader = DataLoader(data, batch_size=64, shuffle=False, collate_fn=_stack)
            out["snd"] = snd(torch.cat([model(x.to(device)).float().cpu() for x in loader]))
        return out

    def finish(self, summary: dict, *, out_dir: Path, model: torch.nn.Module) -> dict:
        """AdaBN on best.pt (method adabn), `target_metrics`, the diagnostics; returns the summary."""
        best = Path(out_dir) / "checkpoints" / "best.pt"
        metrics = dict(summary.get("metrics") or {})
        target_metrics = {k[len(TARGET_PREFIX):]: metrics.pop(k) for k in list(metrics) if k.startswith(TARGET_PREFIX)}
        if best.is_file():
            from ..engine.checkpoint import read_checkpoint

            model.load_state_dict(read_checkpoint(best)["model"])
        if self.method == "adabn":
            target_metrics = self._adabn(model, best) or target_metrics
        info: dict[str, Any] = {"method": self.method, "select": self.cfg.adapt.select,
                                "num_target_images": len(self.target),
                                "num_target_val": len(self.target_val) if self.target_val is not None else 0}
        if self.before is not None:
            info.update(self._diagnostics(model, Path(out_dir)))
        monitor = "snd" if self.cfg.adapt.select == "snd" else summary.get("monitor")
        return {**summary, "monitor": monitor, "metrics": metrics, "target_metrics": target_metrics, "adapt": info}

    def _adabn(self, model, best: Path) -> dict:
        from ..engine.checkpoint import read_checkpoint, save_atomic
        from ..engine.loop import public_metrics
        from .adabn import adapt_batchnorm

        dev = self.runtime.device
        model.to(dev)
        adapt_batchnorm(model, self._target_data(augment=False), device=dev, batch_size=self.cfg.train.batch_size)
        if best.is_file():
            ckpt = read_checkpoint(best)
            ckpt["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            ckpt["adapt"] = {"method": "adabn", "target": self.cfg.adapt.target.images, "num_images": len(self.target)}
            save_atomic(ckpt, best)
        if self.target_val is None:
            return {}
        model.eval()
        with torch.inference_mode():
            m = self._extra_eval(model, device=dev, classes=self.splits.classes)
        return {k[len(TARGET_PREFIX):]: v for k, v in public_metrics(m).items() if k.startswith(TARGET_PREFIX)}

    def _diagnostics(self, model, out_dir: Path) -> dict:
        after = self._features(model)
        seed = self.cfg.train.seed
        pads = (proxy_a_distance(*self.before, seed=seed), proxy_a_distance(*after, seed=seed))
        embedding_plot(self.before, after, out_dir / "domain_features.png", pads=pads)
        return {"proxy_a_distance": {"before": round(pads[0], 4), "after": round(pads[1], 4)},
                "plot": "domain_features.png"}


def _stack(samples: list[dict]) -> torch.Tensor:
    return torch.stack([s["image"] for s in samples])


def prepare_adaptation(cfg: Any, *, task: Task, splits: DataSplits, image_size: int, preprocessing: Any,
                       runtime: Any) -> Adaptation | None:
    """None when no `adapt.*` key is set; otherwise the checked inputs of the adaptation."""
    a = cfg.adapt
    if a.method == "none" and not a.target.images and a.target.val is None:
        return None
    if a.method == "cdan" and task.name not in CONDITIONAL_TASKS:
        raise VTError(f"adapt.method=cdan conditions on class predictions, which the {task.name} task does not make: "
                      f"use dann, mmd or adabn (cdan is for {', '.join(CONDITIONAL_TASKS)})")
    if a.select == "snd" and task.name not in CONDITIONAL_TASKS:
        raise VTError(f"adapt.select=snd scores class predictions; the {task.name} task has none: use source_val")
    if a.method in TRAINED and cfg.transfer.strategy == "linear_probe":
        raise VTError(f"adapt.method={a.method} aligns the backbone's features, which a linear probe freezes: "
                      "use transfer.strategy=finetune or lp_ft (adabn works with a probe)")
    need_images = a.method != "none" or a.select == "snd"
    paths = target_paths(a.target.images) if (a.target.images or need_images) else []
    val = target_val_split(task, data=cfg.data, val=a.target.val, classes=splits.classes, image_size=image_size,
                           preprocessing=preprocessing, seed=cfg.train.seed)
    return Adaptation(cfg=cfg, task=task, splits=splits, image_size=image_size, runtime=runtime, target=paths,
                      target_val=val)
