"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", Algorithm 2): the log marginal evidence of a Bayesian linear model from features to
one-hot labels, maximised over its prior precision alpha and noise precision beta by the
paper's fixed-point iteration, per sample and averaged over the classes.

Higher is better; scores of different backbones on the same labelled data are comparable (their
feature widths may differ). One SVD of the (N, D) features serves every class.
"""
from __future__ import annotations

import numpy as np


def logme(features: np.ndarray, labels: np.ndarray, *, iterations: int = 100, tol: float = 1e-3) -> float:
    """`features` (N, D) float, `labels` (N,) int class ids -> LogME score (nats per sample)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features {f.shape} and labels {y.shape} do not match")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2                                  # eigenvalues of F^T F (the rest, if D > N, are 0)
    scores = []
    for k in np.unique(y):
        t_k = (y == k).astype(np.float64)
        x2 = (u.T @ t_k) ** 2                       # target energy along each singular direction
        res_x2 = max(float(t_k @ t_k - x2.sum()), 0.0)   # the part no direction explains
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
            res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + res_x2
            new_alpha, new_beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            done = abs(new_alpha / new_beta - t) / t < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * logdet - beta / 2 * res2
                    - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
        scores.append(evidence / n)
    return float(np.mean(scores))
