"""Stage 1, ``sercache extract``: run frozen encoders over a corpus into the cache.

``sercache.extract(...)`` is also the public API function (see ``sercache/__init__.py``). Once this
subpackage is imported, Python binds ``sercache.extract`` to it, shadowing that function; the module
is therefore made callable, and calling it is calling the function.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from sercache.extract.api import extract_features

        return extract_features(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
