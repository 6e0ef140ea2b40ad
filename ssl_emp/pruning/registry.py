"""A registry whose names are known without importing what they name: each entry is ``"module:Class"``, imported
on first use. The config checks a scorer's or selector's name before torch loads (a bad value fails in well
under 2 s); building a pruner imports the class, and with it torch."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping


class LazyRegistry(MutableMapping):
    """``{name: class}``, loading each class when it is first looked up. An entry may also be set to a class at
    run time (``SELECTORS["mine"] = MySelector``), as with a plain dict."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._paths = dict(entries)
        self._loaded: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        if name not in self._loaded:
            module, attribute = self._paths[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, value: type) -> None:
        self._paths[name] = f"{value.__module__}:{value.__qualname__}"
        self._loaded[name] = value

    def __delitem__(self, name: str) -> None:
        del self._paths[name]
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"LazyRegistry({', '.join(self._paths)})"
