"""User-facing errors: one line that says what is wrong, where, and how to fix it.

The CLI prints a `VTError` as a single line and exits with status 2; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class VTError(Exception):
    """An error caused by user input (a path, a name, a config value), explained in one line."""


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 3) -> str:
    """`"; did you mean 'resnet18'?"`, or a short list of valid names when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"; valid: {shown}"
