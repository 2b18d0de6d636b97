"""Domain adaptation on the shared backbone, for every task (task-agnostic: never imports tasks/).

- `dann`: gradient reversal + a domain discriminator on the backbone's pooled deepest features
  (Ganin et al. 2016), lambda 2/(1+exp(-10p))-1, discriminator lr x10;
- `cdan`: the discriminator conditioned on class predictions (Long et al. 2018; classification);
- `mmd`: multi-kernel MMD between the domains' pooled features (DAN, Long et al. 2015);
- `adabn`: BatchNorm statistics re-estimated on target images (Li et al. 2016), also post-hoc on
  any checkpoint (`vt adapt --checkpoint CKPT --target DIR --out FILE.pt`).

Config: `adapt.method`, `adapt.target.images`, `adapt.target.val`, `adapt.weight`, `adapt.select`.
"""
from __future__ import annotations

from .adabn import adapt_batchnorm, adapt_checkpoint
from .layers import DomainDiscriminator, grl_lambda, mk_mmd, reverse_gradient
from .run import Adaptation, prepare_adaptation

METHODS = ("none", "dann", "cdan", "mmd", "adabn")

__all__ = ["METHODS", "Adaptation", "DomainDiscriminator", "adapt_batchnorm", "adapt_checkpoint", "grl_lambda",
           "mk_mmd", "prepare_adaptation", "reverse_gradient"]
