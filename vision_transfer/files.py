"""Output files: every write goes to a temporary name beside its target and is renamed into place
(atomic), so an interrupted run never leaves a half-written file; and unique output names.

Imports nothing heavy (no torch): the model-free `vt eval` and `vt similar` paths use it."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` with the same suffix (writers that read the format
    from it still work); renames it onto `path` when the block succeeds, removes it when it
    fails. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_default(o: Any):
    """numpy / torch scalars and arrays in JSON."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic JSON write (numpy / torch scalars and arrays allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique with `_2`, `_3`... when two inputs share one (`a/x.jpg`, `b/x.png`)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        out.append(p.stem if n == 1 else f"{p.stem}_{n}")
    return out
