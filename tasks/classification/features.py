"""Pooled backbone features computed once, for linear probes (and anything else that trains on a
frozen backbone): in memory, and on disk keyed by backbone, weights, preprocessing, image size,
the stages pooled and the exact image list (paths, sizes and modification times).

Every stage's map is pooled in the one backbone pass (the pass computes them all anyway), so
`transfer.probe_layers` can try any set of stages without a second pass: the cached tensor is the
concatenation, stage by stage, and `stage_columns` says where each stage's channels sit."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vision_transfer.engine.checkpoint import save_atomic
from vision_transfer.engine.logging import console


def cache_dir() -> Path:
    return Path(os.environ.get("VT_CACHE_DIR", Path.home() / ".cache" / "vision_transfer")) / "features"


def cache_key(*, backbone: str, weights: str | None, preprocessing: dict, image_size: int, paths: list[Path],
              channels: list[int] | None = None, stages: list[int] | None = None,
              labels: list | None = None) -> str:
    """`channels` (the backbone's stage channels) ties the key to the architecture too, so a
    backbone whose layout changed between versions never reads stale features; `stages`: the
    stages pooled (None: the deepest only). File names are hashed as bytes (`os.fsencode`), so a
    name that is not valid UTF-8 (surrogate-escaped by Python) keys like any other. `labels`: the
    targets cached beside the features, when they are not implied by the paths (multi-label CSVs)."""
    h = hashlib.sha256()
    h.update(json.dumps([backbone, weights, preprocessing, image_size, channels, stages]).encode())
    if labels is not None:
        h.update(json.dumps(labels).encode())
    for p in paths:
        st = os.stat(p)
        # surrogateescape: a file name that is not UTF-8 (Latin-1 from an old camera) keys by its raw bytes
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def stage_columns(channels: list[int], stages: list[int]) -> list[int]:
    """Column indices, in a tensor of every stage's pooled channels concatenated, of `stages`."""
    starts = [sum(channels[:i]) for i in range(len(channels))]
    return [c for s in stages for c in range(starts[s], starts[s] + channels[s])]


@torch.inference_mode()
def extract_pooled(backbone: nn.Module, pool, dataset: Dataset, *, device: torch.device, batch_size: int = 64,
                   num_workers: int = 0, desc: str = "features",
                   all_stages: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features (N, C) float32, labels (N,))` in dataset order, backbone in eval mode; with
    `all_stages` every map the backbone returns is pooled and they are concatenated."""
    was = backbone.training
    backbone.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    cl = device.type in ("cpu", "cuda")
    with Progress(console=console, transient=True) as bar:
        tid = bar.add_task(f"extracting {desc}", total=len(dataset))
        for batch in loader:
            x = batch["image"].to(device)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            maps = backbone(x)
            feats.append(torch.cat([pool(m).float() for m in maps], 1).cpu() if all_stages
                         else pool(maps[-1]).float().cpu())
            labels.append(batch["label"])
            bar.advance(tid, len(x))
    backbone.train(was)
    return torch.cat(feats), torch.cat(labels)


def cached_features(backbone, pool, dataset, *, key: str | None, device, batch_size: int, num_workers: int,
                    desc: str, all_stages: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of the deepest map, or with `all_stages` of every stage (the backbone's
    `out_indices` set to all of them for the pass), from the cache or one backbone pass."""
    path = cache_dir() / f"{key}.pt" if key else None
    width = sum(f.channels for f in backbone.stage_info) if all_stages else backbone.num_features
    if path is not None and path.is_file():
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
            if d["features"].shape == (len(dataset), width):
                return d["features"], d["labels"]
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            path.unlink(missing_ok=True)
    was_cl = next(backbone.parameters()).is_contiguous()
    if device.type in ("cpu", "cuda"):
        backbone.to(memory_format=torch.channels_last)
    out_indices = backbone.out_indices
    if all_stages:
        backbone.out_indices = tuple(range(len(backbone.stage_info)))
    try:
        out = extract_pooled(backbone, pool, dataset, device=device, batch_size=batch_size,
                             num_workers=num_workers, desc=desc, all_stages=all_stages)
    finally:
        backbone.out_indices = out_indices
    if was_cl:
        backbone.to(memory_format=torch.contiguous_format)
    if path is not None:
        save_atomic({"features": out[0], "labels": out[1]}, path)
    return out


class FeatureDataset(Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "label": self.labels[i]}
