"""Hub loading, offline: a torch.hub repo (cached GitHub clone and a local folder) and a timm model
in a Hugging Face cache, both populated by the test with random-init weights it saved itself,
load through the public path; the numbers equal timm's own model on the same input."""
from __future__ import annotations

import json

import pytest
import torch

from vision_transfer.backbones import create_backbone
from vision_transfer.backbones.foundation import build_foundation
from vision_transfer.errors import VTError
from vision_transfer.weights import WeightsRequest

ARGS = dict(depth=2, embed_dim=48, num_heads=2)
HUBCONF = '''dependencies = ["torch", "timm"]
import os, timm, torch

def tiny_clip(**kw):
    """A ViT-B/16 CLIP architecture, shrunk; weights saved beside this file."""
    m = timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=0, **ARGS)
    m.load_state_dict(torch.load(os.path.join(os.path.dirname(__file__), "w.pt"), weights_only=True))
    return m

def other_entry():
    return torch.nn.Identity()
'''


def _reference():
    import timm

    torch.manual_seed(3)
    return timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=0, dynamic_img_size=True,
                             **ARGS).eval()


def _tiny_clip(weights):
    # the registry entry's architecture, shrunk as in the repo above
    from vision_transfer.backbones import BACKBONES, register_backbone

    if "hub_tiny_clip" not in BACKBONES:
        @register_backbone("hub_tiny_clip", family="vit")
        def build(*, weights, out_indices=None):
            return build_foundation("vit_base_patch16_clip_224", weights=weights, out_indices=out_indices, **ARGS)
    return create_backbone("hub_tiny_clip", weights=weights).eval()


def _same_as_timm(bb, ref):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[-1]
        got = bb(x)[2]                        # the stride-16 level is the ViT's own final map
    assert torch.allclose(got, want, atol=1e-5)


@pytest.fixture
def hub_repo(tmp_path, monkeypatch):
    ref = _reference()
    repo = tmp_path / "hub" / "acme_vits_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF.replace("**ARGS", ", ".join(f"{k}={v}" for k, v in ARGS.items())))
    torch.save(ref.state_dict(), repo / "w.pt")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("vision_transfer.torch_hub._github_reachable", lambda timeout=3.0: False)
    return repo, ref


def test_torch_hub_cached_repo_and_local_folder_load_the_same_weights(hub_repo):
    repo, ref = hub_repo
    bb = _tiny_clip("hub:acme/vits:tiny_clip")          # found in torch.hub's cache, no network
    assert bb.weights == "hub:acme/vits:tiny_clip"
    _same_as_timm(bb, ref)
    _same_as_timm(_tiny_clip(f"hub:{repo}:tiny_clip"), ref)     # source=local: a cloned folder


def test_torch_hub_errors_name_the_entries_and_the_cache_folder(hub_repo, tmp_path):
    with pytest.raises(VTError, match="no entry 'tiny_clp'; did you mean 'tiny_clip'"):
        _tiny_clip("hub:acme/vits:tiny_clp")
    with pytest.raises(VTError, match=r"put a clone .* in .*acme_other_main"):
        _tiny_clip("hub:acme/other:tiny_clip")
    with pytest.raises(VTError, match="do not fit"):
        create_backbone("tf_efficientnet_lite0", weights="hub:acme/vits:tiny_clip")


def test_hf_hub_cache_offline_loads_timm_weights(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    ref = _reference()
    commit = "0" * 40
    root = tmp_path / "hf" / "models--acme--tiny-clip"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({
        "architecture": "vit_base_patch16_clip_224", "num_classes": 0, "model_args": ARGS,
        "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": [3, 224, 224],
                           "interpolation": "bicubic", "num_classes": 0, "license": "mit"}}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    bb = build_foundation("vit_base_patch16_clip_224", weights=WeightsRequest("hub", "hf-hub:acme/tiny-clip")).eval()
    assert bb.preprocessing.mean == (0.5, 0.5, 0.5)
    _same_as_timm(bb, ref)
