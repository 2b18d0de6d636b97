"""Classification metrics from logits and labels: accuracy, top-5, macro-F1, per-class, confusion matrix."""
from __future__ import annotations

import numpy as np
import torch


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """`logits (N, K)`, `labels (N,)` -> the DESIGN metric names; rows of the confusion matrix are true classes."""
    k = len(classes)
    pred = logits.argmax(1)
    topk = logits.topk(min(5, k), dim=1).indices
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels.numpy(), pred.numpy()), 1)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    n = max(len(labels), 1)
    return {
        "accuracy": float(tp.sum() / n),
        "top5_accuracy": float((topk == labels[:, None]).any(1).float().sum().item() / n),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "loss": float(torch.nn.functional.cross_entropy(logits, labels).item()) if len(labels) else 0.0,
    }
