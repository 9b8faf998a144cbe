"""``egemaps`` and ``compare``: openSMILE's eGeMAPSv02 and ComParE_2016 (needs the opensmile package)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sercache.features.streams import register_stream
from sercache.features.streams.base import Runtime, StreamConfig, StreamKind


@dataclass
class OpenSmileConfig(StreamConfig):
    pass


def _builder(kind: str) -> Any:
    def build(c: OpenSmileConfig, rt: Runtime) -> Any:
        from sercache.features.opensmile import OpenSmileExtractor

        return OpenSmileExtractor(kind)  # raises ExtractError here when opensmile is missing
    return build


register_stream(*(StreamKind(kind, f"openSMILE {name}; needs the opensmile package", OpenSmileConfig, _builder(kind),
                              order=order)
                   for kind, name, order in (("egemaps", "eGeMAPSv02", 60), ("compare", "ComParE_2016", 61))))
