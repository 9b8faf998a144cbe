"""The head registry: ``HEADS[name](dims=..., n_classes=..., **hyperparameters)``.

Each module of this package that defines a head decorates its class with :func:`register` (also
:func:`register_head`); the first read of the registry (:data:`HEADS`, :func:`get_head`) imports every
module of the package, so a new head is one new file here. A name registered twice is refused
(``RegistryError``). The CLI's ``--head`` choices and ``--ROLE-stream`` options are read from the same
files' source without importing torch (:mod:`sercache.head_catalog`; tests check that both agree).
"""
from __future__ import annotations

from collections.abc import Mapping

from sercache.heads.base import Batch, Head, HeadOutput, PooledHead, StreamBatch
from sercache.registry import Registry, RegistryError


class UnknownHeadError(RegistryError, KeyError):
    """A head no module registers (a ``KeyError`` too, as before)."""

    __str__ = RegistryError.__str__  # the message itself, not KeyError's quoted repr


_HEADS: Registry[type[Head]] = Registry("head", __name__, UnknownHeadError)
#: Every head class by name (read-only; the head modules are imported on the first read).
HEADS: Mapping[str, type[Head]] = _HEADS.view()


def register(cls: type[Head]) -> type[Head]:
    """Class decorator: make a head available by its ``name`` (CLI choices come from here)."""
    return _HEADS.add(cls.name, cls)


register_head = register


def get_head(name: str) -> type[Head]:
    heads = _HEADS.all()
    if name not in heads:
        raise UnknownHeadError(f"unknown head {name!r}; valid heads: {', '.join(sorted(heads))}")
    return heads[name]


__all__ = ["HEADS", "Batch", "Head", "HeadOutput", "PooledHead", "StreamBatch", "UnknownHeadError", "get_head",
           "register", "register_head"]
