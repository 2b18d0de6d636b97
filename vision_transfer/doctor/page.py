"""How `vt doctor` shows its findings: a rich table on the terminal, an HTML page with histograms."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..report import get_console, show_path


def print_findings(result: dict, out: Path) -> None:
    con = get_console()
    counts = Table(title=f"{result['task']} dataset", title_justify="left")
    counts.add_column("split")
    counts.add_column("images", justify="right")
    counts.add_column("per class")
    for split, s in result["splits"].items():
        per = s.get("pixel_share") or s.get("per_class") or {}
        counts.add_row(split, str(s.get("images", "")), escape(", ".join(f"{c} {v}" for c, v in per.items())))
    con.print(counts)
    table = Table(title="findings", title_justify="left")
    for col in ("severity", "kind", "message", "e.g."):
        table.add_column(col, overflow="fold")
    for f in result["findings"]:
        colour = "red" if f["severity"] == "error" else "yellow"
        table.add_row(f"[{colour}]{f['severity']}[/{colour}]", f["kind"], escape(f["message"]),
                      escape(str(f["items"][0])) if f["items"] else "")
    if result["findings"]:
        con.print(table)
    n_err = sum(f["severity"] == "error" for f in result["findings"])
    n_warn = len(result["findings"]) - n_err
    verdict = "[green]ok[/green]" if not n_err else f"[red]{n_err} error(s)[/red]"
    con.print(f"doctor: {verdict}, {n_warn} warning(s); see {escape(show_path(out / 'doctor.html'))}")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figures(result: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    for split, s in result["splits"].items():
        per = s.get("per_class")
        if per:
            fig, ax = plt.subplots(figsize=(5, 2.6))
            ax.bar(list(per), list(per.values()), color="#4c72b0")
            ax.set_title(f"{split}: per class"), ax.tick_params(axis="x", rotation=45)
            figs.append(_png(fig))
    st = result["stats"]
    if st.get("image_sizes"):
        fig, ax = plt.subplots(figsize=(4, 3))
        w, h = zip(*st["image_sizes"])
        ax.scatter(w, h, s=8, alpha=0.6)
        ax.set_xlabel("width"), ax.set_ylabel("height"), ax.set_title("image sizes (upright)")
        figs.append(_png(fig))
    if st.get("box_sizes"):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        axes[0].hist(st["box_sizes"], bins=30, color="#55a868")
        for a in st.get("anchor_sizes") or []:
            axes[0].axvline(a, color="red", lw=1)
        axes[0].set_title("box size sqrt(w*h) at train scale; red: anchors")
        axes[1].hist(st["box_aspects"], bins=30, color="#c44e52")
        axes[1].set_xscale("log"), axes[1].set_title("box aspect w/h")
        figs.append(_png(fig))
    return figs


def write_html(path: Path, result: dict) -> None:
    from ..files import write_text

    rows = "".join(
        f"<tr class='{f['severity']}'><td>{f['severity']}</td><td>{html.escape(f['kind'])}</td>"
        f"<td>{html.escape(f['message'])}</td><td>{'<br>'.join(html.escape(str(i)) for i in f['items'][:10])}</td></tr>"
        for f in result["findings"])
    verdict = "ok" if result["ok"] else "errors found"
    page = (f"<!doctype html><meta charset='utf-8'><title>vt doctor {result['task']}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:4px 8px;border-bottom:1px solid #ddd}"
            ".error td:first-child{color:#b00}.warning td:first-child{color:#a60}</style>"
            f"<h1>vt doctor: {result['task']} ({verdict})</h1>"
            f"<table><tr><th>severity</th><th>kind</th><th>message</th><th>items</th></tr>{rows}</table>"
            f"<h2>distributions</h2>{''.join(_figures(result))}")
    write_text(path, page)
