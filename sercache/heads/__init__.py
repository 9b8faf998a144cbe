"""The head registry: ``HEADS[name](dims=..., n_classes=..., **hyperparameters)``."""
from __future__ import annotations

from sercache.heads.base import Batch, Head, HeadOutput, PooledHead, StreamBatch

HEADS: dict[str, type[Head]] = {}


def register(cls: type[Head]) -> type[Head]:
    """Class decorator: make a head available by its ``name`` (CLI choices come from here)."""
    if not cls.name or cls.name in HEADS:
        raise ValueError(f"head name {cls.name!r} is empty or taken")
    HEADS[cls.name] = cls
    return cls


def get_head(name: str) -> type[Head]:
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; valid heads: {', '.join(sorted(HEADS))}")
    return HEADS[name]


def _load_all() -> None:
    """Import every head module (each registers itself): the files of heads/ that define one."""
    import importlib

    from sercache.head_catalog import head_modules

    for module in head_modules():
        try:
            importlib.import_module(f"sercache.heads.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sercache.heads.{module}":
                raise


_load_all()

__all__ = ["HEADS", "Batch", "Head", "HeadOutput", "PooledHead", "StreamBatch", "get_head", "register"]
