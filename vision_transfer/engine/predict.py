"""The one predict loop every task shares: read images (skipping and counting unreadable ones),
run the task's "predict one batch", let the task draw each result, write `predictions.json`.

    rows = predict_images(task, model, paths, out_dir=out, meta=meta, device=dev, batch_size=8)

Each row is `{"image": path, **files the task drew, **the task's result}`; the task's private
entries (keys starting with "_", such as a label mask kept for drawing) are not written.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import report
from ..data.image import BadImage, read_image
from ..files import unique_stems, write_json


def predict_images(task: Any, model: nn.Module, paths: Sequence[Path], *, out_dir: Path, meta: dict,
                   device: torch.device, batch_size: int = 8, dtype: torch.dtype | None = None,
                   **options: Any) -> list[dict]:
    """Predictions for image files, in order; unreadable files are skipped, counted and reported."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    report.reset()
    rows: list[dict] = []
    items = list(zip(paths, unique_stems([Path(p) for p in paths])))
    for start in range(0, len(items), max(1, batch_size)):
        loaded = []
        for path, stem in items[start:start + batch_size]:
            try:
                loaded.append((path, stem, read_image(path)))
            except BadImage as e:
                report.skip(path, getattr(e, "reason", "unreadable"), str(e))
        if not loaded:
            continue
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            results = task.predict_batch(model, [a for _, _, a in loaded], meta=meta, device=device, **options)
        for (path, stem, image), result in zip(loaded, results):
            files = task.draw(image, result, out_dir=out_dir, stem=stem, meta=meta)
            rows.append({"image": str(path), **files, **{k: v for k, v in result.items() if not k.startswith("_")}})
    write_json(out_dir / "predictions.json", rows)
    if report.skipped():
        report.finish(out_dir, total=len(items))   # `skipped 1 of 9 images: 1 truncated; see OUT/skipped.json`
    return rows
