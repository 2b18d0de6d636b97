"""A linear probe solved to the optimum: multinomial logistic regression on cached features.

On frozen features the probe is a convex problem, small enough to solve exactly in full batch:

    minimise   mean_i CE(x_i W + b, y_i)  +  ||W||^2 / (2 C n)

(scikit-learn's `LogisticRegression(C=C)` objective divided by `C n`: the same optimum, so the
same `C` means the same model; the intercept is not penalised; for two classes the penalty is
doubled, see `fit_softmax`). Features are standardised with
the train split's mean and std; L-BFGS with a strong-Wolfe line search runs in float64 on the CPU.
`C` is chosen on a log grid, warm-started from strong to weak regularisation (the regularisation
path of `LogisticRegressionCV`), by validation accuracy (ties: lower validation log-loss), on the
validation split when there is one, else by stratified k-fold cross-validation on the train split
(the linear-evaluation protocol of Kornblith et al. 2019 and CLIP). The result is un-standardised
into a plain `weight (K, D)`, `bias (K,)` on the raw features.

    fit = solve_probe(train_x, train_y, val_x, val_y, num_classes=10)
    linear.weight.copy_(fit.weight); linear.bias.copy_(fit.bias)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

# sklearn's LogisticRegressionCV grid (1e-4 .. 1e4) at twice its density: on standardised
# few-shot features the optimum sits between 1e-3 and 1, and 10 points leave steps of 7.7x.
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 17))
MAX_ITER = 1000
PATIENCE = 4   # Cs past the best before the path stops (two decades at this density)


@dataclass
class ProbeFit:
    """A solved probe. `weight (K, D)` and `bias (K,)` act on raw (un-standardised) features."""

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    selection: str                         # "val", "cv:<k>" or "fixed"
    scores: list[dict] = field(default_factory=list)   # per C: {"C", "accuracy", "log_loss"}
    iterations: int = 0

    @property
    def best(self) -> dict:
        return next((s for s in self.scores if s["C"] == self.C), {})


@dataclass
class Standardiser:
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardiser:
        std = x.std(0, unbiased=False)
        # a constant feature (a dead channel) carries nothing: scale 1 keeps it at zero, not NaN
        return cls(x.mean(0), torch.where(std > 1e-12, std, torch.ones_like(std)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def unstandardise(self, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(w, b)` on standardised features -> the same logits on raw features."""
        w_raw = w / self.std                      # (K, D)
        return w_raw, b - w_raw @ self.mean


def fit_softmax(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, C: float, init: tuple | None = None,
                label_smoothing: float = 0.0, max_iter: int = MAX_ITER,
                tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise the objective above for `x (N, D)` float64, `y (N,)`; returns `(W (K, D), b (K,), iterations)`.

    `init` warm-starts from a neighbouring C's solution. Stops when the largest gradient entry
    falls below `tol` (scikit-learn's lbfgs stops at 1e-4 on the same scale) or after `max_iter`.
    The gradient is written by hand (softmax minus targets): no autograd graph per evaluation,
    which halves the cost of these small problems."""
    n, d = x.shape
    w = init[0].clone() if init else torch.zeros(num_classes, d, dtype=x.dtype)
    b = init[1].clone() if init else torch.zeros(num_classes, dtype=x.dtype)
    w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
    # targets as F.cross_entropy(label_smoothing=e) defines them: (1 - e) one-hot + e / K
    t = torch.full((n, num_classes), label_smoothing / num_classes, dtype=x.dtype)
    t[torch.arange(n), y] += 1.0 - label_smoothing
    # two classes: scikit-learn fits one weight vector d = w1 - w2, and at the optimum w1 = -w2 = d / 2,
    # so ||W||^2 = ||d||^2 / 2; twice the strength makes the same C the same model there too
    lam = (2.0 if num_classes == 2 else 1.0) / (C * n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    @torch.no_grad()
    def closure() -> torch.Tensor:
        logp = torch.log_softmax(torch.addmm(b, x, w.T), dim=1)
        g = (logp.exp() - t) / n                      # d loss / d logits
        torch.addmm(w, g.T, x, beta=lam, out=w.grad)  # g^T x + lam w
        torch.sum(g, 0, out=b.grad)
        return -(t * logp).sum() / n + 0.5 * lam * (w * w).sum()

    opt.step(closure)
    iters = opt.state[opt._params[0]].get("n_iter", 0)  # noqa: SLF001 - LBFGS keeps its count there
    return w, b, int(iters)


def _score(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """(correct count, summed log-loss) of a solution on `x, y`."""
    logits = torch.addmm(b, x, w.T)
    return int((logits.argmax(1) == y).sum()), float(F.cross_entropy(logits, y, reduction="sum"))


def _regularisation_path(problems: list[tuple], *, num_classes: int, Cs: Sequence[float], label_smoothing: float,
                         patience: int = PATIENCE, tol: float = 1e-6) -> tuple[list[dict], list[tuple]]:
    """Solve every `(x, y, held_x, held_y)` along `Cs` (ascending, each warm-started from its
    previous C), scoring on the held-out parts pooled. Weak regularisation is the slow end (nearly
    separable data), so the walk stops once `patience` Cs in a row have not beaten the best.
    Returns the scores per C walked and the last solution `(w, b)` of each problem per C."""
    scores, solutions, inits = [], [], [None] * len(problems)
    n_held = sum(len(p[3]) for p in problems)
    best, since = None, 0
    for C in Cs:
        correct, loss, sols, iters = 0, 0.0, [], 0
        for j, (x, y, hx, hy) in enumerate(problems):
            w, b, it = fit_softmax(x, y, num_classes=num_classes, C=C, init=inits[j],
                                   label_smoothing=label_smoothing, tol=tol)
            inits[j] = (w, b)
            c, l = _score(w, b, hx, hy)
            correct, loss, iters = correct + c, loss + l, iters + it
            sols.append((w, b))
        scores.append({"C": C, "accuracy": correct / n_held, "log_loss": loss / n_held, "iterations": iters})
        solutions.append(sols)
        key = (scores[-1]["accuracy"], -scores[-1]["log_loss"])
        if best is None or key > best:
            best, since = key, 0
        else:
            since += 1
            if since >= patience:
                break
    return scores, solutions


def stratified_folds(y: torch.Tensor, k: int, *, seed: int = 0) -> torch.Tensor:
    """A fold id in `0..k-1` for every sample: each class dealt round-robin in a seeded order."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y.numpy()):
        idx = rng.permutation(np.flatnonzero(y.numpy() == c))
        folds[idx] = (np.arange(len(idx)) + start) % k   # rotating the start balances fold sizes
        start += len(idx)
    return torch.from_numpy(folds)


def _pick(scores: list[dict]) -> int:
    """Index of the best C: highest accuracy, then lowest log-loss, then the stronger regularisation."""
    return max(range(len(scores)), key=lambda i: (scores[i]["accuracy"], -scores[i]["log_loss"], -i))


@contextlib.contextmanager
def _threads_for(work: float) -> Iterator[None]:
    """One intra-op thread for small problems: a 200 x 1500 matmul split over threads costs more
    in hand-offs than it saves, and on a busy machine each hand-off waits for a time slice
    (measured: 0.8 s on one thread vs 37 s on two, same solve, two loaded cores)."""
    before = torch.get_num_threads()
    if work < 5e8:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def solve_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor | None = None,
                val_y: torch.Tensor | None = None, *, num_classes: int, Cs: Sequence[float] = DEFAULT_CS,
                C: float | None = None, select: str = "auto", folds: int = 5, label_smoothing: float = 0.0,
                seed: int = 0, tol: float = 1e-6) -> ProbeFit:
    """The optimal probe on `train_x (N, D)`, `C` fixed or chosen (`select`: auto | val | cv).
    `tol` (largest gradient entry) applies to the fits that choose C; a looser one (scikit-learn
    stops at 1e-4) is enough to rank candidates."""
    with _threads_for(float(train_x.shape[0]) * train_x.shape[1] * num_classes):
        return _solve(train_x, train_y, val_x, val_y, num_classes=num_classes, Cs=Cs, C=C, select=select,
                      folds=folds, label_smoothing=label_smoothing, seed=seed, tol=tol)


def _solve(train_x, train_y, val_x, val_y, *, num_classes, Cs, C, select, folds, label_smoothing, seed,
           tol) -> ProbeFit:
    st = Standardiser.fit(train_x.double())
    x, y = st(train_x.double()), train_y.long()
    Cs = sorted(Cs)
    if select == "auto":
        select = "val" if val_x is not None and len(val_x) else "cv"
    if C is not None:
        w, b, it = fit_softmax(x, y, num_classes=num_classes, C=C, label_smoothing=label_smoothing)
        return ProbeFit(*st.unstandardise(w, b), C=C, selection="fixed", iterations=it)
    if select == "val":
        if val_x is None or not len(val_x):
            raise ValueError("select='val' needs validation features")
        scores, sols = _regularisation_path([(x, y, st(val_x.double()), val_y.long())], num_classes=num_classes,
                                            Cs=Cs, label_smoothing=label_smoothing, tol=tol)
        i = _pick(scores)
        return ProbeFit(*st.unstandardise(*sols[i][0]), C=Cs[i], selection="val", scores=scores,
                        iterations=sum(s["iterations"] for s in scores))
    return _cross_validated(train_x.double(), y, num_classes=num_classes, Cs=Cs, folds=folds,
                            label_smoothing=label_smoothing, seed=seed, tol=tol)


def _cross_validated(raw_x: torch.Tensor, y: torch.Tensor, *, num_classes: int, Cs: list[float], folds: int,
                     label_smoothing: float, seed: int, tol: float) -> ProbeFit:
    """C by stratified k-fold CV on the train split (each fold standardised on its own train part),
    then one fit on all of it. Classes with a single image cannot be held out: k >= 2 needs two."""
    counts = torch.bincount(y, minlength=num_classes)
    k = int(min(folds, counts[counts > 0].min()))
    st = Standardiser.fit(raw_x)
    if k < 2:   # nothing to cross-validate on: scikit-learn's default strength
        w, b, it = fit_softmax(st(raw_x), y, num_classes=num_classes, C=1.0, label_smoothing=label_smoothing)
        return ProbeFit(*st.unstandardise(w, b), C=1.0, selection="default", iterations=it)
    fold = stratified_folds(y, k, seed=seed)
    problems = []
    for f in range(k):
        tr, te = fold != f, fold == f
        fs = Standardiser.fit(raw_x[tr])
        problems.append((fs(raw_x[tr]), y[tr], fs(raw_x[te]), y[te]))
    scores, _ = _regularisation_path(problems, num_classes=num_classes, Cs=Cs, label_smoothing=label_smoothing,
                                     tol=tol)
    i = _pick(scores)
    iters = sum(s["iterations"] for s in scores)
    init, x = None, st(raw_x)   # the final fit walks the same path up to the chosen C (warm starts)
    for c in Cs[: i + 1]:
        w, b, it = fit_softmax(x, y, num_classes=num_classes, C=c, init=init, label_smoothing=label_smoothing)
        init, iters = (w, b), iters + it
    return ProbeFit(*st.unstandardise(*init), C=Cs[i], selection=f"cv:{k}", scores=scores, iterations=iters)


def log_loss(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of a raw-feature solution (for reports and tests)."""
    return float(F.cross_entropy(torch.addmm(bias.double(), x.double(), weight.double().T), y.long()))


def objective(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, C: float) -> float:
    """The standardised objective of a raw-feature solution (what `fit_softmax` minimises)."""
    st = Standardiser.fit(x.double())
    w = weight.double() * st.std                 # raw -> standardised weights
    b = bias.double() + weight.double() @ st.mean
    k = 2.0 if weight.shape[0] == 2 else 1.0
    return log_loss(w, b, st(x.double()), y) + 0.5 * k / (C * len(y)) * float((w * w).sum())


__all__ = ["DEFAULT_CS", "ProbeFit", "Standardiser", "fit_softmax", "solve_probe", "stratified_folds",
           "log_loss", "objective"]
