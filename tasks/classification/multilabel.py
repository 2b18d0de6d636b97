"""Multi-label classification: several labels per image, read from a CSV.

    vt train classification data.format=csv data.multilabel=true data.train.annotations=train.csv \
        data.val.annotations=val.csv

The CSV names a path column (`path`, `image`, `file` or `filename`; paths relative to the CSV's
folder or `data.train.images`, never outside it) and either a `labels` column with each image's
class names separated by `;` (`cat;dog`, empty for none) or one 0/1 column per class
(`vision_transfer.data.folders.read_multilabel_csv`). The same head as single-label
classification, read one sigmoid per class and trained with binary cross-entropy
(`engine/losses.MultiLabelLoss`); scored by mAP (the mean over classes of the average precision),
per-class precision / recall / F1 at 0.5 and their macro mean (`metrics.multilabel_metrics`); mAP
picks the best epoch. `vt predict` writes every class's score and the labels at or above
`--score-threshold` (0.5).

A view of the classification task (`Classification.configured`), not a fork: the model, loop,
probe and predict path are classification's; what differs is the data reader, the monitor and the
keys that only make sense for one label per image.
"""
from __future__ import annotations

import copy
from typing import Any

from vision_transfer.data.folders import MultiLabelImages, read_multilabel_csv
from vision_transfer.errors import VTError
from vision_transfer.task import TrainingPlan


class MultiLabelView:
    """Mixed into a copy of the classification task by `view_of` (so that a subclass of the
    classification task keeps its own overrides)."""

    monitor = "map"
    multilabel = True

    @classmethod
    def view_of(cls, task: Any, cfg: Any) -> Any:
        _check_config(cfg)
        view = copy.copy(task)
        view.__class__ = type(f"MultiLabel{type(task).__name__}", (cls, type(task)), {})
        return view

    def read_items(self, data: Any) -> tuple[MultiLabelImages, MultiLabelImages | None]:
        from vision_transfer.data.split import hold_out

        if (data.format or "csv") != "csv" or not data.train.annotations:
            raise VTError("data.multilabel=true reads a CSV: give data.format=csv data.train.annotations=FILE.csv "
                          "(columns path,labels with labels like 'a;b', or path and one 0/1 column per class)")
        train = read_multilabel_csv(data.train.annotations, root=data.train.images or data.root, classes=data.classes)
        if data.val.annotations:
            return train, read_multilabel_csv(data.val.annotations, root=data.val.images or data.root,
                                              classes=train.classes)
        if not data.val_split:
            return train, None
        train_idx, val_idx = hold_out(len(train), fraction=data.val_split, seed=data.split_seed)   # not stratified
        return train.subset(train_idx), train.subset(val_idx)

    def prepare_training(self, model, splits, *, probe_solver: str = "auto", probe_layers: Any = "last",
                         **kwargs: Any) -> TrainingPlan:
        # the solved probe and its layer choice fit a softmax: a multi-label probe trains by epochs
        if probe_solver == "lbfgs":
            raise VTError("transfer.probe_solver=lbfgs fits a softmax; with data.multilabel=true use "
                          "transfer.probe_solver=sgd (or auto)")
        if probe_layers != "last" and kwargs.get("strategy") == "linear_probe":
            raise VTError("transfer.probe_layers chooses stages with a softmax probe; with data.multilabel=true "
                          "leave it at last")
        return super().prepare_training(model, splits, probe_solver="sgd", probe_layers=probe_layers,  # type: ignore[misc]
                                        **kwargs)


def _check_config(cfg: Any) -> None:
    """One-line errors for keys that assume one label per image."""
    bad = [k for k, on in (("train.class_weights", cfg.train.class_weights is not None),
                           ("train.loss=focal", cfg.train.loss != "ce"),
                           ("data.sampler=balanced", cfg.data.sampler == "balanced")) if on]
    if bad:
        raise VTError(f"data.multilabel=true trains one sigmoid per class with binary cross-entropy: "
                      f"{', '.join(bad)} assume one label per image; drop them")


__all__ = ["MultiLabelView"]
