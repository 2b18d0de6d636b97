"""Classification metrics from logits and labels: accuracy, top-5, macro-F1, per-class, confusion matrix;
for multi-label images, mAP and per-class F1 at a threshold."""
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


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall step curve, `sum_n (R_n - R_{n-1}) P_n` over the distinct
    score thresholds (tied scores enter together), as scikit-learn's `average_precision_score`.
    NaN when there is no positive."""
    pos = positives.astype(bool)
    if not pos.any():
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]   # the last index of each run of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / pos.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor, classes: list[str], *,
                       threshold: float = 0.5) -> dict:
    """`logits (N, K)`, `targets (N, K)` in {0, 1} -> `map` (mean over the classes with a positive
    of each class's average precision), per-class precision / recall / F1 at `sigmoid >= threshold`,
    `macro_f1` (over the classes with a positive), `subset_accuracy` (every label of an image right)."""
    k = len(classes)
    probs = logits.float().sigmoid().numpy()
    y = targets.numpy() > 0.5
    pred = probs >= threshold
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)
    support = y.sum(0)
    precision = np.divide(tp, tp + fp, out=np.zeros(k), where=(tp + fp) > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    ap = np.array([average_precision(probs[:, i], y[:, i]) for i in range(k)])
    present = support > 0
    n = len(y)
    return {
        "map": float(ap[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "subset_accuracy": float((pred == y).all(1).mean()) if n else 0.0,
        "per_class": {c: {"ap": None if np.isnan(ap[i]) else float(ap[i]), "precision": float(precision[i]),
                          "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "loss": float(torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets.float()).item())
        if n else 0.0,
    }
