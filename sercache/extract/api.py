"""``sercache.extract(...)``: the extract command as a library call, with its options as keywords."""
from __future__ import annotations

import warnings
from typing import Any


def extract_features(root: Any, corpus: str, out: Any, **options: Any) -> Any:
    """``sercache extract``: keywords are :class:`sercache.extract.options.ExtractOptions` fields
    (``streams``, ``ssl_model``, ``layers``, ``device``, ...). Returns the :class:`ExtractReport`."""
    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract

    options.setdefault("command", f"sercache.extract({root!r}, corpus={corpus!r}, out={out!r}, **{options!r})")
    options.setdefault("progress", False)
    opts = ExtractOptions(root=root, corpus=corpus, out=out, **options)
    for message in opts.unused_options():  # an option meant for a stream not extracted: said, not refused
        warnings.warn(message, stacklevel=2)
    return run_extract(opts)
