"""Naming backbone stages on the command line: `last`, `all` or stage numbers (0 = the stage of the
stem, negative numbers count from the deepest), as `transfer.probe_layers` and `vt embed --layers` take them."""
from __future__ import annotations

from typing import Any

from ..errors import VTError


def parse_stages(spec: Any, num_stages: int, *, key: str) -> list[int]:
    """`last` -> `[n-1]`; `all` -> `[0..n-1]`; `[2, -1]`, `"2,3,4"` or `3` -> sorted stage numbers."""
    last = num_stages - 1
    if spec in (None, "last"):
        return [last]
    if spec == "all":
        return list(range(num_stages))
    if isinstance(spec, str) and spec.replace(",", "").replace("-", "").replace(" ", "").isdigit():
        spec = [int(s) for s in spec.split(",") if s.strip()]
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, int) and not isinstance(s, bool)
                                                        for s in spec):
        stages = sorted({s + num_stages if s < 0 else s for s in spec})
        if stages[0] < 0 or stages[-1] > last:
            raise VTError(f"{key}={list(spec)}: this backbone has stages 0..{last}")
        return stages
    raise VTError(f"{key}={spec!r}: give last, all or stage numbers 0..{last} (e.g. '[2, 3, 4]')")
