"""Listings on the terminal: a rich table, or the same data as JSON on stdout (`--json`).
Torch-free: `vt backbones` and `vt heads` print through it."""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_listing(data: Any, *, rows: Sequence[Sequence[str]], columns: Sequence[str], title: str,
                  as_json: bool = False) -> int:
    """`data` as JSON when `as_json`, else `rows` (strings, one per column) as a table; exit status 0."""
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    return 0
