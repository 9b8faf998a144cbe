"""Provenance: what made a stream, and whether two runs may share it.

A provenance record is ``{"identity": {...}, "details": {...}}``. ``identity`` holds what
changes the stored numbers (stream kind, model and weights fingerprint, layers, storage
dtype, compute precision, chunking, spectral parameters); two runs may only write into the
same stream when their identities are equal. ``details`` holds what does not (device,
batch budget, library versions, the command line) and is kept for the record.
"""
from __future__ import annotations

import json
from typing import Any


def identity_of(provenance: dict[str, Any]) -> dict[str, Any]:
    return dict(provenance.get("identity", {}))


def describe_difference(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """A readable list of the identity keys that differ, '' when none do."""
    parts = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "<unset>"), wanted.get(key, "<unset>")
        if _canon(a) != _canon(b):
            parts.append(f"{key}: stored {_short(a)}, asked {_short(b)}")
    return "; ".join(parts)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
