"""``sercache cache info``: the store's summary plus what the features mean (WER, layerless kinds).

The store describes files, layers and problems without knowing what a stream kind is; this
module adds the ASR streams' WER per shard and says which kinds have no model layers. Torch-free.
"""
from __future__ import annotations

from typing import Any

from sercache._typing import Pathlike
from sercache.features.asr_report import format_wer, wer_by_stream
from sercache.features.streams import stream_kinds
from sercache.store import info
from sercache.store.reader import FeatureStore

#: Stream kinds with one feature "layer", 0, and no model layers: the kinds without a model (spectral, openSMILE).
SINGLE_LAYER_KINDS = tuple(k.name for k in stream_kinds().values() if k.model_option is None)


def cache_summary(path: Pathlike) -> dict[str, Any]:
    """Everything ``cache info`` prints, as plain data (JSON-serialisable)."""
    with FeatureStore(path) as cache:
        store_part = info.summarize(cache)
        wer = wer_by_stream(cache)
    summary: dict[str, Any] = {}
    for key, value in store_part.items():  # "wer" right after "streams", where `cache info --json` has it
        summary[key] = value
        if key == "streams":
            summary["wer"] = wer
    return summary


def format_summary(summary: dict[str, Any], max_errors: int = 20) -> str:
    """The human-readable report: the store's, with the WER tables before the problems."""
    return info.format_summary(summary, max_errors, single_layer_kinds=SINGLE_LAYER_KINDS,
                               sections=format_wer(summary.get("wer", {})))
