"""torch.hub as a weights source: `model.weights=hub:OWNER/REPO[:REF]:ENTRY` (a GitHub repo with a
`hubconf.py`) or `hub:/path/to/cloned/repo:ENTRY` (torch.hub's `source="local"`).

The entry's model is built by the repo's own `hubconf.py` (trusted, like `torch.hub.load(...,
trust_repo=True)`), then its weights load into the backbone named by `model.backbone`, which must
be the same architecture (keys as the bare network's; a mismatch names the first bad tensor).
A GitHub repo already in torch.hub's cache (`<hub dir>/OWNER_REPO_REF`) loads without network;
offline and not cached, the error names that folder. An unknown entry lists the repo's entries.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from .errors import VTError, did_you_mean


def parse_hub(value: str) -> tuple[str, str]:
    """`"owner/repo:tag:entry"` -> ("owner/repo:tag", "entry"); a local folder works in place of the repo."""
    repo, sep, entry = value.rpartition(":")
    if not sep or not repo or not entry:
        raise VTError(f"model.weights=hub:{value}: give hub:OWNER/REPO:ENTRY (or hub:OWNER/REPO:REF:ENTRY, "
                      "or hub:/path/to/repo:ENTRY)")
    return repo, entry


def _cached_repo(repo: str) -> tuple[Path | None, Path]:
    """torch.hub's cache folder of a GitHub repo spec, if present, and where it would be."""
    import torch

    owner_name, _, ref = repo.partition(":")
    if owner_name.count("/") != 1:
        raise VTError(f"hub repo {repo!r} is neither a folder nor OWNER/REPO[:REF]")
    owner, name = owner_name.split("/")
    hub_dir = Path(torch.hub.get_dir())
    refs = [ref.replace("/", "_")] if ref else ["main", "master"]
    for r in refs:
        if (hub_dir / f"{owner}_{name}_{r}" / "hubconf.py").is_file():
            return hub_dir / f"{owner}_{name}_{r}", hub_dir
    return None, hub_dir / f"{owner}_{name}_{refs[0]}"


def _github_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(("github.com", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_hub_model(value: str) -> nn.Module:
    """The module a torch.hub entry returns (random init is whatever the entry does)."""
    import torch

    repo, entry = parse_hub(value)
    folder = Path(repo).expanduser()
    if folder.is_dir():
        source, where = "local", str(folder)
    else:
        cached, expected = _cached_repo(repo)
        if cached is not None:
            source, where = "local", str(cached)
        elif _github_reachable():
            source, where = "github", repo
        else:
            raise VTError(f"torch.hub repo {repo} is not on this machine and cannot be downloaded: put a clone "
                          f"(with its hubconf.py) in {expected}, or give hub:/path/to/clone:{entry}")
    if source == "local" and not (Path(where) / "hubconf.py").is_file():
        raise VTError(f"{where} has no hubconf.py: not a torch.hub repo")
    entries = _local_entries(Path(where)) if source == "local" else torch.hub.list(where, trust_repo=True)
    if entry not in entries:
        raise VTError(f"torch.hub repo {repo} has no entry {entry!r}{did_you_mean(entry, entries)}")
    model = torch.hub.load(where, entry, source=source, trust_repo=True, verbose=False)
    if not isinstance(model, nn.Module):
        raise VTError(f"torch.hub entry {entry} of {repo} returned {type(model).__name__}, not a torch module")
    return model


def _local_entries(folder: Path) -> list[str]:
    """Entry points of a hubconf.py, as torch.hub.list reads them (public callables)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"_vt_hubconf_{abs(hash(str(folder)))}", folder / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")
            and not isinstance(getattr(module, n), type(sys))]


def load_hub_weights(backbone: nn.Module, value: str) -> None:
    """Weights of the hub entry's model into `backbone` (same architecture; classifier ignored)."""
    from .backbones.timm_family import _drop_head
    from .backbones.torchvision_family import load_matching

    sd = load_hub_model(value).state_dict()
    load_matching(backbone, _drop_head(sd, backbone), source=f"hub:{value}")
