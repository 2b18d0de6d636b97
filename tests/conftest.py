"""Shared fixtures: small generated image folders, an isolated cache, two torch threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from vision_transfer.data.synthetic import SHAPE_CLASSES, make_classification_images

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["VT_CACHE_DIR"] = str(tmp_path_factory.mktemp("vt-cache"))
    os.environ.setdefault("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    yield


def write_shapes_folder(root: Path, *, train_per_class: int = 8, val_per_class: int = 4, size: int = 40) -> Path:
    """`root/{train,val}/{square,disc,triangle}/*.png` of generated shapes."""
    for split, n, seed in (("train", train_per_class, 0), ("val", val_per_class, 1)):
        for i, (img, label) in enumerate(make_classification_images(per_class=n, size=size, seed=seed)):
            d = root / split / SHAPE_CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{split}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory) -> Path:
    return write_shapes_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a
    shared 2-core machine two threads wait on each other (3-5x slower detection steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
