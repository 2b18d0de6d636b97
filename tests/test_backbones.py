"""The backbone contract for every registered name, real forward/backward per family, weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vision_transfer.backbones import BACKBONES, Backbone, create_backbone, register_backbone
from vision_transfer.backbones.torchvision_family import FAMILIES
from vision_transfer.errors import VTError

META_UNSUPPORTED = {"regnet"}   # torchvision computes regnet widths from tensors at build time


@pytest.mark.parametrize("name", BACKBONES.list())
def test_contract_of_every_registered_backbone(name):
    """Stages, feature_info and the shapes of the returned maps agree (built on the meta device: no
    memory, no init cost)."""
    family = BACKBONES.meta(name)["family"]
    device = "cpu" if family in META_UNSUPPORTED else "meta"
    with torch.device(device):
        bb = create_backbone(name)
        outs = bb(torch.zeros(1, 3, 64, 64))
    info = bb.feature_info
    assert isinstance(bb, Backbone) and len(info) == len(outs) >= 4
    # a plain ViT's stages are its blocks (after the embedding), its maps the pyramid's four levels
    assert len(bb.stages) == len(info) if family != "vit" else len(bb.stages) > len(info)
    assert [o.shape[1] for o in outs] == [f.channels for f in info]
    strides = [f.stride for f in info]
    assert strides == sorted(strides) and strides[-1] == 32
    if name != "alexnet":  # alexnet's 11x11 stride-4 stem does not divide evenly
        assert [o.shape[-1] for o in outs] == [max(1, 64 // s) for s in strides]
    assert len(bb.preprocessing.mean) == 3 and bb.preprocessing.input_size >= 64


REPRESENTATIVES = [names[0] if fam != "efficientnet" else "efficientnet_b0" for fam, (_, names) in FAMILIES.items()]
REPRESENTATIVES = [n if n != "vgg11" else "vgg11_bn" for n in REPRESENTATIVES] + ["tf_efficientnet_lite0",
                                                                                  "timm/mobilenetv3_small_050"]


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_forward_backward_per_family(name):
    bb = create_backbone(name)
    outs = bb(torch.randn(2, 3, 64, 64))
    sum(o.float().mean() for o in outs).backward()
    last = [s for s in bb.stages if any(True for _ in s.parameters())][-1]   # vgg/alexnet end on a max-pool
    grads = [p.grad for p in last.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_out_indices_and_unknown_names():
    bb = create_backbone("resnet18", out_indices=(2, -1))
    assert [f.stride for f in bb.feature_info] == [8, 32]
    assert len(bb(torch.zeros(1, 3, 64, 64))) == 2
    with pytest.raises(VTError, match="did you mean 'resnet18'"):
        create_backbone("resnt18")
    with pytest.raises(VTError, match="out of range"):
        create_backbone("resnet18", out_indices=(7,))
    with pytest.raises(VTError, match="unknown timm model"):
        create_backbone("timm/resnet_does_not_exist")
    with pytest.raises(VTError, match="unknown weights tag 'IMAGENET9K'.*IMAGENET1K_V1"):
        create_backbone("resnet18", weights="IMAGENET9K")


def test_register_backbone_and_instances_work_where_names_do():
    @register_backbone("tiny_test_net", override=True)
    def tiny(*, weights, out_indices=None):
        return create_backbone("mobilenet_v3_small", weights=None, out_indices=out_indices)

    bb = create_backbone("tiny_test_net")
    assert bb.name == "tiny_test_net" and create_backbone(bb) is bb
    with pytest.raises(VTError, match="not a vision_transfer Backbone"):
        create_backbone(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_from_a_saved_file(tmp_path, suffix):
    src = create_backbone("resnet18")
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save(src.body.state_dict(), path)          # torchvision's own key names
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))   # our key names
    dst = create_backbone("resnet18", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    src.eval(), dst.eval()
    assert torch.equal(src(x)[-1], dst(x)[-1])
    with pytest.raises(VTError, match="do not fit"):
        create_backbone("resnet34", weights=str(path))


def test_missing_weights_are_one_clear_line(tmp_path):
    with pytest.raises(VTError, match="does not exist"):
        create_backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(VTError, match=r"put resnet18-[0-9a-f]+\.pth .* in .*checkpoints"):
        create_backbone("resnet18", weights="imagenet")   # no network here, nothing cached in TORCH_HOME


def _imagenet_top5(photo: np.ndarray) -> list[int]:
    import timm

    from vision_transfer.backbones.timm_family import packaged_full_state_dict

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(packaged_full_state_dict("tf_efficientnet_lite0"))
    bb = create_backbone("tf_efficientnet_lite0", weights="imagenet")
    from vision_transfer.data.transforms import embedding_transforms

    x = embedding_transforms(image_size=224, preprocessing=bb.preprocessing)(image=photo)["image"][None]
    with torch.inference_mode():
        logits = model.eval()(x)
        # the registry backbone computes the same pre-logits features as timm's full network
        pooled = bb.eval()(x)[-1].mean((2, 3))
        assert torch.allclose(model.classifier(pooled), logits, atol=1e-4)
    return logits.topk(5).indices[0].tolist()


def test_packaged_lite0_weights_are_real_imagenet_weights():
    from skimage import data

    cat = _imagenet_top5(data.chelsea())
    assert cat[0] in range(281, 286), cat        # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert _imagenet_top5(data.coffee())[0] == 967   # espresso


def test_packaged_weights_are_checksum_verified(monkeypatch):
    from vision_transfer import weights

    monkeypatch.setitem(weights.PACKAGED, "tf_efficientnet_lite0",
                        weights.PACKAGED["tf_efficientnet_lite0"].__class__(
                            *list(weights.PACKAGED["tf_efficientnet_lite0"].__dict__.values())[:3], "0" * 64))
    monkeypatch.setattr(weights, "_VERIFIED", set())
    with pytest.raises(VTError, match="checksum mismatch"):
        weights.packaged_weights_path("tf_efficientnet_lite0")


def test_timm_weights_offline_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(VTError, match="timm weights of resnet18 are not on this machine"):
        create_backbone("timm/resnet18", weights="imagenet")
