"""Parameter-efficient transfer: `transfer.strategy=lora` and `bitfit`.

- lora (Hu et al. 2022): the backbone is frozen and low-rank adapters `W + (alpha/r) B A` train on
  its linear layers (a ViT's attention qkv/proj and MLP fc1/fc2) and its ungrouped convolutions
  (a CNN's stem, 1x1 expansions and projections), through Hugging Face `peft`. Adapters start at
  zero (B = 0), so the first step sees the pretrained network unchanged.
- bitfit (Ben Zaken et al. 2022): only biases and normalisation weights of the backbone train.

Checkpoints hold plain weights: the backbone's `state_dict()` merges every adapter into its base
weight (W + delta under the base layer's own key), so a checkpoint loads into a plain model
without peft; loading plain weights back (resume) puts them into the base layers and zeroes B,
which is the same function.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import VTError

PEFT_STRATEGIES = ("lora", "bitfit")
# rank 8, alpha 16 (scale 2): the values of the LoRA paper's ViT/Roberta runs and peft's examples
LORA_RANK = 8
LORA_ALPHA = 16
_NORMS = (nn.LayerNorm, nn.GroupNorm, _BatchNorm)


def lora_targets(backbone: nn.Module) -> list[str]:
    """Names (relative to `backbone`) of the layers LoRA adapts: every nn.Linear and every
    nn.Conv2d with groups == 1 (peft cannot adapt depthwise convolutions)."""
    skip = {id(m) for m in getattr(backbone, "new_modules", ()) for m in m.modules()}
    return [name for name, m in backbone.named_modules()
            if id(m) not in skip and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))]


def add_lora(backbone: nn.Module, *, rank: int = LORA_RANK, alpha: int = LORA_ALPHA) -> None:
    """Inject adapters once (idempotent); stages holding replaced layers directly are updated."""
    if getattr(backbone, "_vt_lora", None):
        return
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise VTError("transfer.strategy=lora needs peft: pip install 'vision-transfer[peft]' (or pip install peft)") \
            from None
    targets = lora_targets(backbone)
    if not targets:
        raise VTError(f"transfer.strategy=lora: {type(backbone).__name__} has no linear or ungrouped conv layers")
    before = dict(backbone.named_modules())
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets), backbone)
    after = dict(backbone.named_modules())
    memo = {id(before[n]): after[n] for n in targets if after.get(n) is not before[n]}
    for stage in getattr(backbone, "stages", ()):   # stages may reference layers the body owns
        _swap(stage, memo)
    backbone._vt_lora = [n for n in targets if n in after]  # noqa: SLF001 - read by the state-dict hooks
    backbone.register_state_dict_post_hook(_merged_state_dict)
    backbone.register_load_state_dict_pre_hook(_load_plain_state_dict)


def _swap(module: nn.Module, memo: dict[int, nn.Module]) -> None:
    for name, child in module.named_children():
        if id(child) in memo:
            setattr(module, name, memo[id(child)])
        elif not any(child is new for new in memo.values()):   # an adapter's own base_layer stays
            _swap(child, memo)


def set_trainable(backbone: nn.Module, strategy: str) -> None:
    """After the plan froze every stage: the adapters (lora) or biases and norms (bitfit) train."""
    if strategy == "lora":
        add_lora(backbone)
        for name, p in backbone.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
        return
    for m in backbone.modules():
        for name, p in m.named_parameters(recurse=False):
            if name == "bias" or isinstance(m, _NORMS):
                p.requires_grad_(True)


def _merged_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    layers = dict(module.named_modules())
    for name in module._vt_lora:  # noqa: SLF001
        layer, key = layers[name], prefix + name
        base = state_dict.pop(f"{key}.base_layer.weight")
        delta = layer.get_delta_weight("default").detach().to(base.device, base.dtype)
        state_dict[f"{key}.weight"] = base + delta
        if f"{key}.base_layer.bias" in state_dict:
            state_dict[f"{key}.bias"] = state_dict.pop(f"{key}.base_layer.bias")
        for k in [k for k in state_dict if k.startswith(f"{key}.lora_")]:
            del state_dict[k]


def _load_plain_state_dict(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    layers = dict(module.named_modules())
    for name in module._vt_lora:  # noqa: SLF001
        key = prefix + name
        if f"{key}.weight" not in state_dict:
            continue
        state_dict[f"{key}.base_layer.weight"] = state_dict.pop(f"{key}.weight")
        if f"{key}.bias" in state_dict:
            state_dict[f"{key}.base_layer.bias"] = state_dict.pop(f"{key}.bias")
        for pname, p in layers[name].named_parameters():
            if pname.startswith("lora_"):
                value = p.detach().clone() if pname.startswith("lora_A") else p.detach().new_zeros(p.shape)
                state_dict[f"{key}.{pname}"] = value


def footprint(trained: nn.Module, exported: nn.Module, out_dir) -> dict:
    """What a run trained and what it stores: `{"trainable_params", "total_params", "checkpoint_mb"}`
    (trainable as of the last epoch; total and size of the exported model and `checkpoints/best.pt`)."""
    from pathlib import Path

    def unique(m: nn.Module):
        return {id(p): p for p in m.parameters()}.values()

    exported_sd = exported.state_dict()   # plain weights: LoRA merged, as the checkpoint holds them
    ckpt = Path(out_dir) / "checkpoints" / "best.pt"
    return {"trainable_params": sum(p.numel() for p in unique(trained) if p.requires_grad),
            "total_params": sum(v.numel() for k, v in exported_sd.items() if v.is_floating_point()
                                and not k.endswith(("running_mean", "running_var"))),
            "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 3) if ckpt.is_file() else None}
