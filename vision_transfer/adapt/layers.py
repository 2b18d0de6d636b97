"""The pieces of feature-level domain adaptation: gradient reversal, the domain discriminator,
the lambda schedule of Ganin et al. 2016, CDAN's conditioning map and multi-kernel MMD (DAN).

Shapes: pooled features `(N, C)`; class probabilities `(N, K)`; discriminator logits `(N,)`
(1 = source, 0 = target).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Discriminator parameters train at this multiple of the head's learning rate: the papers
# (Ganin et al. 2016; Long et al. 2018) give the freshly initialised layers 10x the rate of the
# pretrained ones. Read by engine.transfer.param_groups through the `vt_lr_mult` attribute.
DISCRIMINATOR_LR_MULT = 10.0
# CDAN's outer product has C*K entries; above this many, the randomized multilinear map
# (Long et al. 2018, sec. 3.2) replaces it with RANDOM_DIM entries.
MAX_OUTER_DIM = 4096
RANDOM_DIM = 1024


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:   # noqa: D102
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):   # noqa: D102
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Identity forward; the gradient times `-coeff` backward."""
    return _ReverseGrad.apply(x, coeff)


def grl_lambda(progress: float, *, gamma: float = 10.0) -> float:
    """2 / (1 + exp(-gamma p)) - 1 for training progress p in [0, 1]: 0 at the start (the
    discriminator's early, noisy gradients do not reach the backbone), close to 1 at the end."""
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


class DomainDiscriminator(nn.Module):
    """MLP `(N, in_features) -> (N,)` logits of "source". Its parameters carry `vt_lr_mult`."""

    def __init__(self, in_features: int, *, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))
        for p in self.parameters():
            p.vt_lr_mult = DISCRIMINATOR_LR_MULT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class ConditioningMap(nn.Module):
    """CDAN's map of features `f (N, C)` and probabilities `g (N, K)` to the discriminator input:
    the flattened outer product `(N, C*K)`, or when C*K > MAX_OUTER_DIM the randomized multilinear
    map `(f R_f) * (g R_g) / sqrt(d)` with fixed Gaussian `R_f (C, d)`, `R_g (K, d)`."""

    def __init__(self, features: int, classes: int, *, seed: int = 0) -> None:
        super().__init__()
        self.randomized = features * classes > MAX_OUTER_DIM
        self.out_features = RANDOM_DIM if self.randomized else features * classes
        if self.randomized:
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("rf", torch.randn(features, RANDOM_DIM, generator=gen), persistent=False)
            self.register_buffer("rg", torch.randn(classes, RANDOM_DIM, generator=gen), persistent=False)

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.rf) * (g @ self.rg) / math.sqrt(RANDOM_DIM)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def domain_loss(logits_s: torch.Tensor, logits_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of the discriminator (source = 1, target = 0) and its number of correct
    answers (a 0-d tensor, for the per-epoch accuracy)."""
    logits = torch.cat([logits_s, logits_t]).float()
    labels = torch.cat([torch.ones_like(logits_s), torch.zeros_like(logits_t)]).float()
    correct = ((logits > 0).float() == labels).sum().detach()
    return F.binary_cross_entropy_with_logits(logits, labels), correct


def mk_mmd(xs: torch.Tensor, xt: torch.Tensor, *, multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Multi-kernel MMD^2 (Long et al. 2015, DAN) between `(N, C)` and `(M, C)`: an equal-weight
    sum of Gaussian kernels whose bandwidths are `multipliers` x the mean pairwise squared distance
    (the median heuristic's cheap twin). The biased estimator: stable for small batches."""
    x = torch.cat([xs, xt]).float()
    d2 = torch.cdist(x, x).pow(2)
    base = d2.detach().sum() / max(x.shape[0] ** 2 - x.shape[0], 1)
    k = sum(torch.exp(-d2 / (base * m + 1e-8)) for m in multipliers)
    n = xs.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
