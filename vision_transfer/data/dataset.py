"""A dataset over image files that survives bad files and augments reproducibly.

- Files that are empty or not images are found up front (a header read, no decoding), skipped
  and counted; a file that fails to decode later is replaced by the next good sample, counted,
  and warned about once, never a crash mid-epoch.
- Augmentation is seeded per (seed, epoch, index), so a run resumed from a checkpoint sees
  exactly the augmentations of an uninterrupted one, with any number of loader workers. The
  epoch sits in shared memory, so persistent loader workers see `set_epoch` too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .. import report
from ..report import show_path
from .image import BadImage, probe_image, read_image


def check_images(paths: Sequence[Path]) -> tuple[list[int], list[str]]:
    """(indices of readable files, messages for the others), each file fully decoded once
    (a truncated JPEG parses its header fine). Every bad file is counted in `report.skip`."""
    good, bad = [], []
    for i, p in enumerate(paths):
        try:
            probe_image(p)
            good.append(i)
        except FileNotFoundError:
            bad.append(f"{show_path(p)}: missing")
            report.skip(p, "missing")
        except BadImage as e:
            bad.append(str(e))
            report.skip(p, e.reason, str(e))
    return good, bad


def warn_skipped(bad: list[str], what: str = "images") -> None:
    """Kept for callers that count skips themselves; the run's summary line says the rest."""
    if bad:
        report.warn(f"skipped {len(bad)} unreadable {what} (first: {bad[0]})")


class EpochSeeded:
    """Per-sample augmentation seeds from (seed, epoch, index). The epoch is a shared-memory
    tensor: loader workers that live across epochs (`persistent_workers`) read the value the
    main process set with `set_epoch`, instead of the copy they were forked with."""

    seed: int = 0

    def _init_seeding(self, seed: int) -> None:
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def sample_seed(self, i: int) -> int:
        return (self.seed * 1_000_003 + self.epoch * 10_007 + i) % 2**31


class ImageDataset(EpochSeeded, Dataset):
    """Samples `{"image": HxWx3 uint8, **target}` -> `transform(sample)`.

    `targets[i]` is the task's target dict of `paths[i]`; `transform` maps a sample dict to the
    tensors the task's collate expects and receives a per-sample seed."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[dict], *,
                 transform: Callable[[dict, int], dict] | None = None, seed: int = 0) -> None:
        self.paths, self.targets = list(paths), list(targets)
        self.transform = transform
        self._init_seeding(seed)
        self.failed = 0

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> dict:
        return {"image": read_image(self.paths[i]), **self.targets[i]}

    def __getitem__(self, i: int) -> dict[str, Any]:
        for k in range(len(self)):
            j = (i + k) % len(self)
            try:
                sample = self.load(j)
                break
            except BadImage as e:
                self.failed += 1
                if self.failed == 1:   # may run in a loader worker: the console is shared, the count is not
                    report.warn(f"an image failed to decode mid-run and was replaced by the next one: {e}")
        else:
            raise BadImage("no image of the dataset can be decoded")
        sample["index"] = i
        if self.transform is None:
            return sample
        return self.transform(sample, self.sample_seed(i))


class albumentations_transform:  # noqa: N801 - used like a function
    """Wrap an albumentations Compose over `image` as a seeded sample transform (picklable)."""

    def __init__(self, compose) -> None:
        self.compose = compose

    def __call__(self, sample: dict, seed: int) -> dict:
        self.compose.set_random_seed(seed)
        out = dict(sample)
        out["image"] = self.compose(image=sample["image"])["image"]
        return out
