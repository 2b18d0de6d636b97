"""What reaches the user besides errors: warnings and counted skips, on the suite's console.

Python `warnings.warn` prints the source file and line and the offending source line: a message
for developers, not users. Everything user-facing goes through here instead:

    report.warn("mask a.png is 30x30, its image 32x32: skipped")        # once per text
    report.skip(path, "truncated", "image file is truncated")          # counted, listed at the end
    report.finish(out_dir, total=812)
    # -> skipped 3 of 812 images: 2 truncated, 1 zero-byte; see run/skipped.json

Skips are kept per process (reset at the start of each run) and de-duplicated by path and reason,
so a dataset checked twice (train, then the cached-feature pass) is counted once. Reasons are a
small vocabulary (`SKIP_REASONS`); `vt doctor` uses the same words.
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

from rich.markup import escape

SKIP_REASONS = ("zero-byte", "truncated", "not-an-image", "too-large", "missing", "unreadable",
                "mask-size-mismatch", "no-mask")

_skips: dict[tuple[str, str], dict] = {}
_warned: set[str] = set()


def show_path(p: str | os.PathLike) -> str:
    """A path as printable text: undecodable bytes in a file name (surrogate escapes) as `\\xe9`."""
    s = os.fspath(p)
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_own_console = None


def get_console():
    """The run's console when the engine is loaded (progress bars and these lines then share it);
    else a console of our own, so the torch-free paths (model-free `vt eval`) stay torch-free."""
    global _own_console
    logging = sys.modules.get("vision_transfer.engine.logging")
    if logging is not None:
        return logging.console
    if _own_console is None:
        from rich.console import Console

        _own_console = Console(stderr=True)
    return _own_console


def warn(text: str) -> None:
    """One yellow line on stderr; the same text only once per process."""
    if text in _warned:
        return
    _warned.add(text)
    get_console().print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True, highlight=False)


def skip(path: str | os.PathLike, reason: str, detail: str = "") -> None:
    """Count `path` as skipped for `reason` (one of `SKIP_REASONS`)."""
    key = (show_path(path), reason)
    _skips.setdefault(key, {"path": key[0], "reason": reason, "detail": detail})


def skipped() -> list[dict]:
    return list(_skips.values())


def reset() -> None:
    _skips.clear()
    _warned.clear()


def summary_line(total: int | None = None, where: str | None = None) -> str | None:
    """`skipped 3 of 812 images: 2 truncated, 1 zero-byte; see run/skipped.json`, or None."""
    if not _skips:
        return None
    counts = Counter(s["reason"] for s in _skips.values())
    parts = ", ".join(f"{n} {r}" for r, n in counts.most_common())
    of = f" of {total}" if total else ""
    return f"skipped {len(_skips)}{of} images: {parts}" + (f"; see {where}" if where else "")


def finish(out_dir: str | os.PathLike | None, *, total: int | None = None, info: dict | None = None) -> str | None:
    """Write `out_dir/skipped.json` (when anything was skipped) and print the summary line, plus a
    line for what the annotation readers dropped or fixed (`info`: counts by kind)."""
    from .files import write_json

    where = None
    if out_dir is not None and _skips:
        path = Path(out_dir) / "skipped.json"
        write_json(path, {"total": total, "skipped": skipped(), "counts": dict(Counter(s["reason"] for s in _skips.values()))})
        where = show_path(path)
    line = summary_line(total, where)
    if line:
        get_console().print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True, highlight=False)
    fixed = {k: v for k, v in (info or {}).items() if isinstance(v, int) and v and not k.endswith("_skipped")}
    if fixed:
        get_console().print(escape("data: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(fixed.items()))),
                         soft_wrap=True, highlight=False, style="dim")
    return line
