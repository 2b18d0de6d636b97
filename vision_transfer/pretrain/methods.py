"""Self-supervised methods over a registry backbone: SimCLR, BYOL, rotation prediction.

Each method is a module whose `forward(views)` returns `{"loss": scalar, ...}`; it holds the
backbone as its *first* submodule (so `find_backbone` finds the online network, never BYOL's
target copy) and small heads over the backbone's pooled deepest feature map.

`views`: a list of `(N, 3, H, W)` tensors, two augmented views of the same N images (rotation
uses only the first).

- SimCLR (Chen et al. 2020): MLP projector, NT-Xent over the 2N views of the batch.
- BYOL (Grill et al. 2020): projector + predictor online, an EMA copy (backbone + projector) as
  target, loss `2 - 2 cos(p, sg(z'))` symmetrised. The EMA step runs at the start of every
  forward (after the previous optimizer step), so the shared engine needs no per-step hook and a
  resumed run restores the target with the rest of the state dict.
- Rotation (Gidaris et al. 2018): every image at 0/90/180/270 degrees, a linear 4-way classifier.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone
from ..registry import Registry

METHODS: Registry[Callable[..., nn.Module]] = Registry("pretraining method")


def pooled(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    """`(N, C)`: global average of the backbone's deepest feature map."""
    return backbone(x)[-1].float().mean(dim=(2, 3))


def mlp(in_dim: int, hidden: int, out: int, *, last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU-Linear (SimCLR v2 / BYOL style projector)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                               nn.Linear(hidden, out)]
    if last_bn:
        layers.append(nn.BatchNorm1d(out, affine=False))
    return nn.Sequential(*layers)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (InfoNCE over the 2N views): view i's positive is its twin, the other 2N-2 are negatives.

    z1, z2: `(N, D)` projections of the two views (any scale: normalised here)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean of `2 - 2 cos(p, z)` over the batch; `z` is the (detached) target projection."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


@METHODS.register("simclr")
class SimCLR(nn.Module):
    def __init__(self, backbone: Backbone, *, hidden_dim: int = 512, proj_dim: int = 128,
                 temperature: float = 0.2, **_: object) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, hidden_dim, proj_dim)
        self.temperature = temperature

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n = views[0].shape[0]
        z = self.projector(pooled(self.backbone, torch.cat(views[:2])))  # one pass: BN sees both views
        return {"loss": nt_xent(z[:n], z[n:], self.temperature)}


@METHODS.register("byol")
class BYOL(nn.Module):
    def __init__(self, backbone: Backbone, *, hidden_dim: int = 512, proj_dim: int = 128, ema: float = 0.99,
                 **_: object) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, hidden_dim, proj_dim)
        self.predictor = mlp(proj_dim, hidden_dim, proj_dim)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self._target_params():
            p.requires_grad_(False)
        self.ema = ema

    def _target_params(self) -> list[nn.Parameter]:
        return [*self.target_backbone.parameters(), *self.target_projector.parameters()]

    def _online_params(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- ema * target + (1 - ema) * online (parameters; BN statistics run on their own)."""
        torch._foreach_lerp_(self._target_params(), self._online_params(), 1.0 - self.ema)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training:
            self.update_target()
        n = views[0].shape[0]
        x = torch.cat(views[:2])
        p = self.predictor(self.projector(pooled(self.backbone, x)))
        with torch.no_grad():
            z = self.target_projector(pooled(self.target_backbone, x))
        # view 1's prediction targets view 2's projection and vice versa
        loss = byol_loss(p[:n], z[n:]) + byol_loss(p[n:], z[:n])
        return {"loss": loss}


@METHODS.register("rotation")
class Rotation(nn.Module):
    uses_views = 1

    def __init__(self, backbone: Backbone, **_: object) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.num_features, 4)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = views[0]
        rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
        target = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
        logits = self.classifier(pooled(self.backbone, rotated.contiguous(memory_format=_fmt(x))))
        loss = F.cross_entropy(logits, target)
        return {"loss": loss, "rotation_accuracy": (logits.argmax(1) == target).float().mean().detach()}


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format


def views_needed(method: nn.Module) -> int:
    """How many augmented views per image the method reads (2 unless it says otherwise)."""
    return int(getattr(method, "uses_views", 2))


def build_method(name: str, *, backbone: Backbone, **options: object) -> nn.Module:
    """The method module `name` (see METHODS) over `backbone`; unknown names list the valid ones."""
    return METHODS.get(name)(backbone, **options)
