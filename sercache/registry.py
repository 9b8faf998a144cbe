"""A registry of named entries, each declared by a module of one package (stdlib only).

Every kind of extension is found this way (stream kinds, corpora and their label presets, fold
protocols, heads, metrics): a module registers its entry when imported, and the first read of the
registry imports every module of the package, so adding an entry is adding a module there. A name
registered twice is refused (:class:`RegistryError`); ``sercache catalog`` lists every kind.
"""
from __future__ import annotations

import importlib
import pkgutil
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
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
    """``kind`` entries by name; ``package``'s modules are imported on the first read.

    Args:
        error: what :meth:`get` raises for an unknown name: a :class:`SercacheError`, usually a subclass of
            :class:`RegistryError` that keeps another builtin base its callers catch (``KeyError``).
        order: the listing order of :meth:`all` (a sort key of an entry); None: the order of registration.
    """

    def __init__(self, kind: str, package: str, error: type[SercacheError] = RegistryError,
                 order: Callable[[E], Any] | None = None) -> None:
        self.kind, self.package, self.error, self.order = kind, package, error, order
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
        if self.order is None:
            return self.entries
        return dict(sorted(self.entries.items(), key=lambda item: self.order(item[1])))

    def get(self, name: str) -> E:
        if name not in self.all():
            raise self.error(f"unknown {self.kind} {name!r}; choose one of {sorted(self.entries)}")
        return self.entries[name]

    def view(self) -> Mapping[str, E]:
        """A read-only mapping of :meth:`all`, read anew on each access (so it can be made at import, unread)."""
        return _RegistryView(self)


class MappingView(Mapping[str, Any]):
    """A read-only mapping computed on each read from ``_mapping()`` (registry defaults, a record's JSON view)."""

    @abstractmethod
    def _mapping(self) -> dict[str, Any]:
        """The mapping as it is now."""

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())


class _RegistryView(MappingView):
    def __init__(self, registry: Registry[Any]) -> None:
        self._registry = registry

    def _mapping(self) -> dict[str, Any]:
        return self._registry.all()

    def __repr__(self) -> str:
        return f"<{self._registry.kind} registry: {', '.join(self._registry.all())}>"
