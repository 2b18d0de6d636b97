"""The study's outputs: per-cell summary with 95 % t-intervals, `study.json`, `study.md` (the
table) and `study.png` (learning curves over samples per class on a log axis, CI bands), plus
`study_layers.png` for the freeze-layers axis."""
from __future__ import annotations

import math
from pathlib import Path

from .files import atomic_path, write_json, write_text


# the "which layers transfer" axes of a study: (axis, heading, what a row is, row header, plot)
_LAYER_SECTIONS = (
    ("freeze_layers", "Which layers transfer", "Pretrained weights fine-tuned with the first k backbone stages frozen.",
     "frozen stages", "study_layers.png"),
    ("probe_layers", "Which layers transfer, probed",
     "A linear probe on the pooled maps of each stage (set); C by cross-validation on the train images.",
     "stages", "study_probe_layers.png"),
)


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """`(mean, low, high)`: Student-t interval of the mean over seeds (None, None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (axis, strategy, freeze_layers, samples_per_class), in the rows' order:
    `{strategy, samples_per_class, mean, ci95_low, ci95_high, n, axis, freeze_layers}`."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["axis"], r["strategy"], r["freeze_layers"], r["samples_per_class"],
                           r.get("probe_layers")), []).append(r["value"])
    out = []
    order = list(dict.fromkeys(k[4] for k in groups if k[4] is not None))   # probe stage sets, as given
    for (axis, strategy, layers, k, probe), values in groups.items():
        mean, low, high = t_interval(values)
        out.append({"strategy": strategy, "samples_per_class": k, "mean": mean, "ci95_low": low, "ci95_high": high,
                    "n": len(values), "axis": axis, "freeze_layers": layers})
        if probe is not None:
            out[-1].update(probe_layers=probe, probe_position=order.index(probe))
    return out


def write_study(out_dir: Path, rows: list[dict], *, task: str, monitor: str) -> list[dict]:
    """study.json, study.md, study.png (and study_layers.png); returns the summary."""
    summary = summarise(rows)
    write_json(out_dir / "study.json", {"task": task, "metric": monitor, "rows": rows, "summary": summary})
    write_text(out_dir / "study.md", study_markdown(summary, rows, task=task, monitor=monitor))
    curves = [s for s in summary if s["axis"] == "strategy"]
    if curves:
        plot_curves(curves, [r for r in rows if r["axis"] == "strategy"], out_dir / "study.png", x="samples_per_class",
                    line="strategy", monitor=monitor, title=f"{task}: {monitor} vs labelled images per class")
    layers = [s for s in summary if s["axis"] == "freeze_layers"]
    if layers:
        plot_curves(layers, [r for r in rows if r["axis"] == "freeze_layers"], out_dir / "study_layers.png",
                    x="freeze_layers", line="samples_per_class", monitor=monitor,
                    title=f"{task}: which layers transfer (fine-tune with the first k stages frozen)")
    probes = [s for s in summary if s["axis"] == "probe_layers"]
    if probes:
        position = {s["probe_layers"]: s["probe_position"] for s in probes}
        probe_rows = [{**r, "probe_position": position[r["probe_layers"]]} for r in rows if r["axis"] == "probe_layers"]
        plot_curves(probes, probe_rows, out_dir / "study_probe_layers.png", x="probe_position",
                    line="samples_per_class", monitor=monitor, xlabels={v: k for k, v in position.items()},
                    title=f"{task}: which layers transfer (linear probe on each stage's pooled map)")
    return summary


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _cell_text(s: dict) -> str:
    ci = "" if s["ci95_low"] is None else f" [{_fmt(s['ci95_low'])}, {_fmt(s['ci95_high'])}]"
    return f"{_fmt(s['mean'])}{ci}"


def _table(summary: list[dict], *, row_key: str, col_key: str, row_name: str, col_name: str) -> list[str]:
    rows = list(dict.fromkeys(s[row_key] for s in summary))
    cols = sorted(dict.fromkeys(s[col_key] for s in summary))
    at = {(s[row_key], s[col_key]): s for s in summary}
    lines = [f"| {row_name} | " + " | ".join(f"{col_name} {c}" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(_cell_text(at[r, c]) if (r, c) in at else "" for c in cols) + " |")
    return lines


def study_markdown(summary: list[dict], rows: list[dict], *, task: str, monitor: str) -> str:
    n = max((s["n"] for s in summary), default=0)
    lines = [f"# {task} study: {monitor} on the full validation split", "",
             f"Mean over {n} seeds [95 % t-interval]; each seed draws its own stratified subset of the train split "
             "and trains with the same budget; the value is the last epoch's.", ""]
    strategy = [s for s in summary if s["axis"] == "strategy"]
    if strategy:
        lines += _table(strategy, row_key="strategy", col_key="samples_per_class", row_name="strategy",
                        col_name="per class")
        lines += ["", "![learning curves](study.png)", ""]
    for axis, title, intro, row_name, png in _LAYER_SECTIONS:
        part = [s for s in summary if s["axis"] == axis]
        if part:
            lines += [f"## {title}", "", intro, ""]
            lines += _table(part, row_key=axis, col_key="samples_per_class", row_name=row_name, col_name="per class")
            lines += ["", f"![{title.lower()}]({png})", ""]
    seconds = {}
    for r in rows:
        name = {"strategy": r["strategy"], "freeze_layers": f"freeze {r['freeze_layers']}"}.get(
            r["axis"], f"probe {r.get('probe_layers')}")
        seconds.setdefault(name, []).append(r["train_time_s"])
    lines += ["Mean wall time per run: " + ", ".join(f"{k} {sum(v) / len(v):.1f} s" for k, v in seconds.items()), ""]
    lines += ["How each run trained: `runs/<strategy>/spc<k>/seed<s>/curves.png` (loss, metric and lr per epoch).", ""]
    return "\n".join(lines)


def plot_curves(summary: list[dict], rows: list[dict], path: Path, *, x: str, line: str, monitor: str,
                title: str, xlabels: dict | None = None) -> None:
    """One line per `line` value over `x`, mean with a shaded 95 % band and each seed as a dot;
    samples per class on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, name in enumerate(dict.fromkeys(s[line] for s in summary)):
        pts = sorted((s for s in summary if s[line] == name), key=lambda s: s[x])
        xs, means = [s[x] for s in pts], [s["mean"] for s in pts]
        colour = f"C{i}"
        label = name if line == "strategy" else f"{name} per class"
        ax.plot(xs, means, "o-", color=colour, label=label, lw=2)
        band = [(s[x], s["ci95_low"], s["ci95_high"]) for s in pts if s["ci95_low"] is not None]
        if band:
            bx, lo, hi = zip(*band)
            # every monitored metric (accuracy, AP, mIoU) is a fraction: draw the band inside [0, 1]
            # (study.json keeps the raw interval, which few seeds can push past the bounds)
            ax.fill_between(bx, [max(0.0, v) for v in lo], [min(1.0, v) for v in hi], color=colour, alpha=0.2, lw=0)
        seeds = [(r[x], r["value"]) for r in rows if r[line] == name]
        ax.scatter([p[0] for p in seeds], [p[1] for p in seeds], s=10, color=colour, alpha=0.5)
    if x == "samples_per_class":
        ax.set_xscale("log")
        ticks = sorted({s[x] for s in summary})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled images per class (log scale)")
    elif xlabels:
        ax.set_xlabel("backbone stages probed (0 = the stem's)")
        ax.set_xticks(sorted(xlabels), [str(xlabels[i]) for i in sorted(xlabels)])
    else:
        ax.set_xlabel("frozen backbone stages (from the stem)")
        ax.set_xticks(sorted({s[x] for s in summary}))
    ax.set_ylabel(f"{monitor} (val)")
    ax.set_ylim(top=min(1.02, max(ax.get_ylim()[1], 0.0)))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
