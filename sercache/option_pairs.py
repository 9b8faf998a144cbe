"""``KEY=VALUE`` option values (``--stream-name ssl=wavlm``, ``--model ssl=/models/hubert``): one parser."""
from __future__ import annotations


def parse_pairs(specs: list[str], option: str, form: str, example: str, error: type[Exception]) -> dict[str, str]:
    """``["a=b"]`` -> ``{"a": "b"}``; a value without ``=`` raises ``error`` naming ``option`` and an example."""
    out = {}
    for spec in specs:
        if "=" not in spec:
            raise error(f"{option} {spec!r}: use {form}, e.g. {option} {example}")
        key, value = (s.strip() for s in spec.split("=", 1))
        if key in out:  # the last would win silently
            raise error(f"{option} {key}={out[key]} and {option} {spec}: {key} is given twice; give it once")
        out[key] = value
    return out
