"""`vt backbones`: registered backbones, their default weights and whether those work offline."""
from __future__ import annotations

from ..weights import PACKAGED, packaged_available


def _offline(name: str, source: str) -> bool:
    """True when the default ImageNet weights are on this machine (packaged or cached)."""
    if source == "packaged":
        return packaged_available(name)
    if source == "torchvision":
        from .torchvision_family import tv_weights_file
        from ..weights import WeightsRequest

        try:
            return tv_weights_file(name, WeightsRequest("imagenet"))[1].is_file()
        except Exception:  # noqa: BLE001
            return False
    return False


def _weights(name: str, source: str) -> str:
    if source == "packaged":
        return f"imagenet (pip: {PACKAGED[name].pip_name})"
    if source == "torchvision":
        from torchvision.models import get_model_weights

        return ", ".join(["imagenet"] + [w.name for w in get_model_weights(name)])
    if source == "timm-hub":
        from .foundation import FOUNDATION

        return f"imagenet = {FOUNDATION[name][1]} (HF hub, via timm), none"
    return "builder-defined"


def _licence(name: str, meta: dict) -> str | None:
    if meta.get("source") == "packaged":
        return "apache-2.0"
    if meta.get("source") == "timm-hub":
        from .foundation import weights_licence

        return weights_licence(name, meta.get("tag"))
    return None


def backbone_rows(pattern: str | None = None) -> list[dict]:
    from ..plugins import task_names
    from ..task import get_task
    from . import BACKBONES

    for name in task_names():   # plugins may register backbones (detection: the COCO detectors' bodies)
        get_task(name)

    rows = []
    for name in BACKBONES.list(pattern):
        meta = BACKBONES.meta(name)
        rows.append({"name": name, "family": meta.get("family", "custom"),
                     "weights": _weights(name, meta.get("source", "user")),
                     "offline": _offline(name, meta.get("source", "user")), "licence": _licence(name, meta)})
    return rows


def print_backbones(pattern: str | None = None, *, as_json: bool = False) -> int:
    from ..tables import print_listing

    rows = backbone_rows(pattern)

    def licence(r: dict) -> str:
        lic = r["licence"] or "-"
        return f"[red]{lic}[/red]" if "nc" in lic.split("-") else lic   # non-commercial stands out

    return print_listing(rows, rows=[(r["name"], r["family"], r["weights"], "yes" if r["offline"] else "-", licence(r))
                                     for r in rows],
                         columns=("name", "family", "weights", "offline", "licence"),
                         title="backbones (any timm model also works as timm/<name>)", as_json=as_json)
