"""Evaluation reports for every task: metrics.json, report.md, report.html and a rich table.

`write_report` is what `vt eval` calls for classification, detection and segmentation alike:

    write_report("runs/eval", task="classification", classes=["cat", "dog"],
                 metrics={"accuracy": 0.9, "macro_f1": 0.89,
                          "per_class": {"cat": {"precision": 0.9, "recall": 0.92, "f1": 0.91}, ...}},
                 confusion_matrix=[[46, 4], [6, 44]])

Per-class tables come from every `metrics` key that starts with `per_class` (see
`per_class_table`); scalar numbers become the summary table. The HTML file is self-contained
(inline SVG curves, base64 PNG confusion matrix) and opens offline in a browser.
"""
from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..files import write_text
from .plots import confusion_matrix_png, svg_line_chart

PRCurves = Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]


def write_report(out_dir: str | os.PathLike, *, task: str, metrics: Mapping[str, Any], classes: Sequence[str] | None,
                 confusion_matrix: Sequence[Sequence[float]] | Any | None = None, pr_curves: PRCurves | None = None,
                 title: str | None = None, details: Mapping[str, Any] | None = None,
                 write_metrics: bool = True) -> dict[str, Path]:
    """Write report.md and report.html (and metrics.json, confusion_matrix.png) into `out_dir`.

    Args:
        out_dir: folder, created if missing. Files are replaced atomically.
        task: "classification", "detection" or "segmentation" (shown in the title).
        metrics: the metric dict with DESIGN's names. Scalars (int/float) form the summary table;
            a value of -1 shows as "n/a" (COCO's "undefined"). Keys starting with `per_class` form
            the per-class table: `{class: number}` gives one column named after the key's suffix
            (`per_class_AP` -> "AP"), `{class: {column: number}}` several columns, and a list in the
            order of `classes` works for both. `metrics["confusion_matrix"]` is used when the
            `confusion_matrix` argument is None. Must be JSON-serialisable (numpy values are converted).
        classes: class names in index order (rows of the per-class table and the confusion matrix);
            None for "whatever names the per-class metrics use".
        confusion_matrix: square counts, rows = true class, columns = predicted class, in the order
            of `classes`. Written as confusion_matrix.png and inlined in the HTML.
        pr_curves: `{class: {curve label: (recall values, precision values)}}` (e.g. the
            `pr_curves` of `evaluate_coco`): one small SVG chart per class, plus the class mean.
        title: report heading; default "<task> evaluation".
        details: facts shown in the report but kept out of metrics.json (counts, input files, backend).
        write_metrics: also write `metrics` to metrics.json (True), or leave that to the caller.

    Returns:
        `{"metrics": ..., "markdown": ..., "html": ..., "confusion_matrix": ...}` paths of the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"{task} evaluation"
    if confusion_matrix is None:
        confusion_matrix = metrics.get("confusion_matrix")
    if confusion_matrix is not None and classes is None:
        raise ValueError("write_report: a confusion matrix needs `classes` (its row / column names)")
    written: dict[str, Path] = {}
    if write_metrics:
        written["metrics"] = write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2) + "\n")
    png_b64 = None
    if confusion_matrix is not None:
        written["confusion_matrix"] = confusion_matrix_png(confusion_matrix, list(classes or []),
                                                           out / "confusion_matrix.png")
        png_b64 = base64.b64encode(written["confusion_matrix"].read_bytes()).decode("ascii")
    summary = scalar_metrics(metrics)
    header, rows = per_class_table(metrics, classes)
    written["markdown"] = write_text(out / "report.md", _markdown(
        title, task, summary, header, rows, details, has_cm=png_b64 is not None, has_pr=bool(pr_curves)))
    written["html"] = write_text(out / "report.html", _html(
        title, task, summary, header, rows, details, png_b64, pr_curves))
    return written


def jsonable(value: Any) -> Any:
    """numpy arrays / scalars -> lists / Python numbers, NaN / inf -> None, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics dict, in its order."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def per_class_table(metrics: Mapping[str, Any], classes: Sequence[str] | None) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the per-class table: first column the class, then one column per metric."""
    columns: dict[str, dict[str, Any]] = {}
    order: list[str] = list(classes or [])
    for key, value in metrics.items():
        if not key.startswith("per_class"):
            continue
        suffix = key[len("per_class_"):] if key.startswith("per_class_") else ""
        if isinstance(value, Sequence) and not isinstance(value, str) and classes is not None:
            value = dict(zip(classes, value))
        if not isinstance(value, Mapping):
            continue
        for name, v in value.items():
            name = str(name)
            if name not in order:
                order.append(name)
            if isinstance(v, Mapping):
                for col, x in v.items():
                    columns.setdefault(f"{col} {suffix}".strip(), {})[name] = x
            else:
                columns.setdefault(suffix or "value", {})[name] = v
    if not columns:
        return [], []
    header = ["class", *columns]
    return header, [[name, *(columns[c].get(name) for c in columns)] for name in order]


def fmt(v: Any) -> str:
    """4 decimals for fractions, "n/a" for COCO's -1 and for missing values, integers as they are."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if v == -1:
        return "n/a"
    return str(v) if isinstance(v, int) else f"{v:.4f}"


def print_metrics_table(metrics: Mapping[str, Any], *, title: str = "metrics", classes: Sequence[str] | None = None,
                        console: Any = None) -> None:
    """Print the scalar metrics (one row) and the per-class table with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    summary = scalar_metrics(metrics)
    console.print(f"[bold]{escape_rich(title)}[/bold]")
    table = Table()  # one row per metric: fits any terminal width
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(escape_rich(k), fmt(v))
    console.print(table)
    header, rows = per_class_table(metrics, classes)
    if rows:
        pc = Table()
        for i, h in enumerate(header):
            pc.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            pc.add_row(escape_rich(str(row[0])), *(fmt(v) for v in row[1:]))
        console.print(pc)


def escape_rich(s: str) -> str:
    return s.replace("[", r"\[")




def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _markdown(title: str, task: str, summary: Mapping[str, Any], header: list[str], rows: list[list[Any]],
              details: Mapping[str, Any] | None, *, has_cm: bool, has_pr: bool) -> str:
    lines = [f"# {title}", "", f"Task: {task}. n/a = undefined (e.g. no ground truth of that kind).", ""]
    if details:
        lines += [f"- {k}: {v}" for k, v in details.items()] + [""]
    if summary:
        lines += ["## Summary", "", *_md_table(list(summary), [list(summary.values())]), ""]
    if rows:
        lines += ["## Per class", "", *_md_table(header, rows), ""]
    if has_pr:
        lines += ["Per-class precision-recall curves: see report.html.", ""]
    if has_cm:
        lines += ["## Confusion matrix", "", "Rows: true class; columns: predicted class.", "",
                  "![confusion matrix](confusion_matrix.png)", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:6px}.muted{color:#666}"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{escape(fmt(v))}</td>' if isinstance(v, (int, float)) or v is None
        else f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(title: str, task: str, summary: Mapping[str, Any], header: list[str], rows: list[list[Any]],
          details: Mapping[str, Any] | None, png_b64: str | None, pr_curves: PRCurves | None) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>",
             f"<p class='muted'>Task: {escape(task)}. n/a = undefined (e.g. no ground truth of that kind).</p>"]
    if details:
        parts.append("<ul>" + "".join(f"<li>{escape(str(k))}: {escape(str(v))}</li>"
                                      for k, v in details.items()) + "</ul>")
    if summary:
        parts += ["<h2>Summary</h2>", _html_table(list(summary), [list(summary.values())])]
    if rows:
        parts += ["<h2>Per class</h2>", _html_table(header, rows)]
    if pr_curves:
        parts += ["<h2>Precision-recall curves</h2>", "<p class='muted'>COCOeval's interpolated precision at "
                  "101 recall points (all object sizes, up to 100 detections an image).</p>",
                  "<div class='grid'>" + "".join(_pr_charts(pr_curves)) + "</div>"]
    if png_b64:
        parts += ["<h2>Confusion matrix</h2><p class='muted'>Rows: true class; columns: predicted class.</p>",
                  f"<img alt='confusion matrix' src='data:image/png;base64,{png_b64}'>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _pr_charts(pr_curves: PRCurves) -> list[str]:
    """One chart for the mean over classes (where the recall grids agree), then one per class."""
    charts = []
    labels = {lab for curves in pr_curves.values() for lab in curves}
    mean: dict[str, tuple[Sequence[float], list[float]]] = {}
    for lab in sorted(labels):
        xs_ys = [c[lab] for c in pr_curves.values() if lab in c]
        if len({tuple(x) for x, _ in xs_ys}) == 1:
            ys = [sum(v) / len(v) for v in zip(*(y for _, y in xs_ys))]
            mean[lab] = (xs_ys[0][0], ys)
    if mean and len(pr_curves) > 1:
        charts.append(svg_line_chart(mean, title=f"mean of {len(pr_curves)} classes"))
    charts += [svg_line_chart(dict(curves), title=str(name)) for name, curves in pr_curves.items()]
    return charts
