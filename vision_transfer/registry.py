"""A registry is a dict and a decorator: a duplicate name is an error, an unknown name is an error
that lists the close matches."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import VTError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Named builders of one kind (backbones, heads, tasks).

    >>> HEADS = Registry("head")
    >>> @HEADS.register("linear")
    ... def linear(*, in_features: int, num_classes: int): ...
    >>> HEADS.get("linear")  # doctest: +ELLIPSIS
    <function linear ...>
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict] = {}

    def register(self, name: str | None = None, *, override: bool = False, **meta) -> Callable[[T], T]:
        """Decorator: `@REG.register("name", family="resnet")`; the name defaults to `__name__`."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise VTError(f"a {self.kind} needs a name: pass register(name=...)")
            self.add(key, obj, override=override, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, *, override: bool = False, **meta) -> None:
        if name in self._items and not override:
            raise VTError(f"{self.kind} {name!r} is already registered; pick another name or pass override=True")
        self._items[name] = obj
        self._meta[name] = meta

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise VTError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}") from None

    def meta(self, name: str) -> dict:
        self.get(name)
        return self._meta[name]

    def list(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted; `pattern` is a shell wildcard or a substring."""
        names = sorted(self._items)
        if not pattern:
            return names
        if any(c in pattern for c in "*?["):
            return [n for n in names if fnmatch.fnmatch(n, pattern)]
        return [n for n in names if pattern.lower() in n.lower()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
