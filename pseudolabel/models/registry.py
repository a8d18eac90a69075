"""A tiny builder registry (after torchvision ``models/_api.py``)."""

from __future__ import annotations

from collections.abc import Callable


class Registry:
    """Name -> builder. Registering a name twice is an error; lookups name the unknown key."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def wrap(fn: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = fn
            return fn

        return wrap

    def get(self, name: str) -> Callable:
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._builders[name]

    def names(self) -> list[str]:
        return list(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
