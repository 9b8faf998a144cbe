"""A registry of named entries, each declared by a module of one package (stdlib only).

Every kind of extension is found this way (corpora and their label presets, fold protocols): a
module registers its entry when imported, and the first read of the registry imports every module of
the package, so adding an entry is adding a module there. The stream registry finds its kinds with
the same :func:`package_modules`; ``sercache catalog`` lists every kind.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, Generic, TypeVar

from sercache.errors import SercacheError

E = TypeVar("E")


class RegistryError(SercacheError, ValueError):
    """A name that is taken, or not registered (the message lists the registered ones)."""


def package_modules(package: str) -> list[ModuleType]:
    """Every module of ``package`` (by name, those starting with ``_`` left out), imported, in name order."""
    path = importlib.import_module(package).__path__
    names = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in names]


class Registry(Generic[E]):
    """``kind`` entries by name; ``package``'s modules are imported on the first read."""

    def __init__(self, kind: str, package: str, error: type[Exception] = RegistryError) -> None:
        self.kind, self.package, self.error = kind, package, error
        self.entries: dict[str, E] = {}
        self._loaded = False

    def add(self, name: str, entry: E) -> E:
        if not name or self.entries.get(name, entry) is not entry:
            raise RegistryError(f"{self.kind} name {name!r} is empty or taken")
        self.entries[name] = entry
        return entry

    def all(self) -> dict[str, E]:
        if not self._loaded:
            self._loaded = True  # first, so that a module reading the registry while it loads sees it loading
            package_modules(self.package)
        return self.entries

    def get(self, name: str) -> E:
        if name not in self.all():
            raise self.error(f"unknown {self.kind} {name!r}; choose one of {sorted(self.entries)}")
        return self.entries[name]


class MappingView(Mapping[str, Any]):
    """A read-only mapping computed on each read from ``_mapping()`` (registry defaults, a record's JSON view)."""

    def _mapping(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())
