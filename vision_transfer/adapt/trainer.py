"""Adversarial and MMD adaptation as a Task wrapper: the engine's own `fit` trains it.

`AdaptModule` holds the task's model and the discriminator; its `forward(batch, target_images)`
runs the task's own `train_step` on the source batch and adds the domain loss on the backbone's
pooled deepest features of both domains, so under DDP the whole step runs inside one wrapped
forward and every gradient is all-reduced. `TrainingPlan.export` stays the task's model:
checkpoints load and predict without target data or this package.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..task import Task, find_backbone
from .data import EndlessLoader
from .layers import ConditioningMap, DomainDiscriminator, domain_loss, grl_lambda, mk_mmd, reverse_gradient

ADVERSARIAL = ("dann", "cdan")
TRAINED = ADVERSARIAL + ("mmd",)


def pooled(features: list[torch.Tensor]) -> torch.Tensor:
    """Global average pool of the deepest map: `(N, C, H, W)` -> `(N, C)` (float32)."""
    return features[-1].float().mean(dim=(2, 3))


class AdaptModule(nn.Module):
    """Task model + domain discriminator. `total_steps` sets the progress p of the lambda schedule."""

    def __init__(self, base: nn.Module, task: Task, *, method: str, num_classes: int, total_steps: int,
                 weight: float = 1.0, seed: int = 0, target_bn: str = "batch") -> None:
        super().__init__()
        self.base, self.method, self.weight, self.target_bn = base, method, weight, target_bn
        self._task = task
        self.backbone = find_backbone(base)
        channels = self.backbone.num_features
        self.condition = ConditioningMap(channels, num_classes, seed=seed) if method == "cdan" else None
        width = self.condition.out_features if self.condition is not None else channels
        self.discriminator = DomainDiscriminator(width) if method in ADVERSARIAL else None
        self.total_steps = max(1, total_steps)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("stats", torch.zeros(4, dtype=torch.float64))  # correct, seen, loss sum, steps
        self._captured: list[torch.Tensor] | None = None
        self.backbone.register_forward_hook(self._capture)
        if method == "cdan":   # the classifier's source logits of the step, read by forward
            base.register_forward_hook(self._capture_logits)

    def _capture(self, _module, _inputs, output) -> None:
        if self.training:
            self._captured = output

    def _capture_logits(self, _module, _inputs, output) -> None:
        if self.training:
            self._last_logits = output

    def lam(self) -> float:
        return grl_lambda(int(self.step) / self.total_steps)

    def forward(self, batch: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = dict(self._task.train_step(self.base, batch))
        fs = pooled(self._captured)
        ps = self._last_logits.float().softmax(1).detach() if self.condition is not None else None
        out_t = self._target_forward(target)
        ft = pooled(self._captured)
        self._captured = None
        lam = self.lam()
        if self.method == "mmd":
            d = mk_mmd(fs, ft)
            losses["mmd"] = d.detach()
            losses["loss"] = losses["loss"] + self.weight * lam * d
            self.stats[2:] += torch.stack([d.detach().double(), torch.ones((), dtype=torch.float64, device=d.device)])
        else:
            if self.condition is not None:
                fs, ft = self.condition(fs, ps), self.condition(ft, out_t.float().softmax(1).detach())
            # one discriminator batch of both domains: its BatchNorm must not normalise each domain
            # on its own (that erases the very mean shift it is there to detect)
            logits = self.discriminator(reverse_gradient(torch.cat([fs, ft]), lam))
            ls, lt = logits[: len(fs)], logits[len(fs):]
            d, correct = domain_loss(ls, lt)
            losses["domain_loss"] = d.detach()
            losses["loss"] = losses["loss"] + self.weight * d
            one = torch.ones((), dtype=torch.float64, device=d.device)
            self.stats += torch.stack([correct.double(), one * (len(ls) + len(lt)), d.detach().double(), one])
        self.step += 1
        return losses

    def _target_forward(self, target: torch.Tensor) -> torch.Tensor | None:
        """The target pass. `target_bn="batch"` (default): the target batch is normalised by its own
        statistics, which also update the running averages (Ganin et al. 2016), so test-time
        statistics are those of both domains. `"running"`: BatchNorm reads its running statistics
        and leaves them alone, as at test time; measured worse (README, Domain adaptation)."""
        batch_stats = self.target_bn == "batch"
        norms = [m for m in self.backbone.modules() if isinstance(m, _BatchNorm) and m.training and not batch_stats]
        for m in norms:
            m.eval()
        try:
            if self.condition is not None:   # CDAN needs the classifier's predictions on the target
                return self.base(target)
            self.backbone(target)
            return None
        finally:
            for m in norms:
                m.train()

    def epoch_stats(self) -> dict[str, float]:
        """Discriminator accuracy and mean domain loss since the last call (this process's share)."""
        correct, seen, loss, steps = self.stats.tolist()
        self.stats.zero_()
        out = {"adapt_lambda": round(self.lam(), 4)}
        if self.method == "mmd":
            return {"mmd": loss / max(1.0, steps), **out}
        return {"domain_acc": correct / seen if seen else float("nan"), "domain_loss": loss / max(1.0, steps), **out}


class AdaptingTask:
    """The base task with a domain loss: `train_step` draws a target batch (none for adabn or
    source-only runs); `evaluate` scores the base model and adds the discriminator's accuracy and
    `extra_eval`'s numbers (target-val metrics, SND). Everything else is the base task's: it is
    not a Task subclass, so no class default of Task shadows the base task's attributes."""

    def __init__(self, base: Task, *, target: EndlessLoader | None = None, extra_eval=None,
                 monitor: str | None = None) -> None:
        self.base, self.target, self.extra_eval, self._monitor = base, target, extra_eval, monitor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    @property
    def monitor(self) -> str:   # noqa: D102
        return self._monitor or self.base.monitor

    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        if self.target is None:
            return self.base.train_step(model, batch)
        inner = getattr(model, "module", model)
        target = self.target.next().to(next(inner.parameters()).device, non_blocking=True)
        return model(batch, target)

    def evaluate(self, model, loader, *, device, classes, amp_dtype=None) -> dict[str, Any]:
        inner = getattr(model, "module", model)
        base = inner.base if isinstance(inner, AdaptModule) else inner
        metrics = self.base.evaluate(base, loader, device=device, classes=classes, amp_dtype=amp_dtype)
        if isinstance(inner, AdaptModule):
            metrics.update(inner.epoch_stats())
        if self.extra_eval is not None:
            metrics.update(self.extra_eval(base, device=device, classes=classes, amp_dtype=amp_dtype))
        return metrics


def total_steps(num_train: int, *, batch_size: int, world_size: int, epochs: int) -> int:
    """The training steps (forward passes) fit will run on each rank (a DistributedSampler shard)."""
    per_rank = max(1, batch_size // world_size)
    per_epoch = math.ceil(math.ceil(num_train / world_size) / per_rank)
    return max(1, epochs * per_epoch)


__all__ = ["ADVERSARIAL", "TRAINED", "AdaptModule", "AdaptingTask", "pooled", "total_steps"]
