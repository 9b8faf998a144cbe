"""What an ASR stream's fields mean: the hypotheses next to the gold transcripts, and WER per shard.

Torch-free (numpy + pandas over :class:`~sercache.store.reader.FeatureStore`), so a notebook can
read a cache's transcripts without a deep-learning stack::

    from sercache.features.asr_report import transcripts, wer_by_shard
    transcripts(cache, "asr")      # utt_id, text, wer, word_errors, ref_words, ..., shard, session, transcript
    wer_by_shard(cache, "asr")     # shard, word_errors, ref_words, utterances, wer
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from sercache.store.errors import CacheKeyError
from sercache.store.reader import FeatureStore

#: the stream kind whose per-utterance fields are hypotheses with word error counts (features/asr.py)
ASR_KIND = "asr"


def transcripts(cache: FeatureStore, stream: str = "asr") -> pd.DataFrame:
    """The ASR hypotheses, with per-utterance WER where a gold transcript exists."""
    info = cache.stream_info(stream)
    if info.kind != ASR_KIND:
        raise CacheKeyError(f"stream {stream!r} is a {info.kind!r} stream, not an ASR stream")
    ids = cache.utt_ids(stream)
    data: dict[str, Any] = {"utt_id": ids}
    for name in info.per_utterance_fields:
        data[name] = cache.per_utterance(stream, name, ids)
    df = pd.DataFrame(data)
    return df.merge(cache.utterances[["utt_id", "shard", "session", "transcript"]], on="utt_id", how="left")


def wer_by_shard(cache: FeatureStore, stream: str = "asr") -> pd.DataFrame:
    """Corpus-level WER per shard: total word errors / total reference words."""
    df = transcripts(cache, stream)
    df = df[df.ref_words > 0]
    g = df.groupby("shard", sort=False)[["word_errors", "ref_words"]].sum()
    g["utterances"] = df.groupby("shard", sort=False).size()
    g["wer"] = g.word_errors / g.ref_words
    return g.reset_index()


def wer_by_stream(cache: FeatureStore) -> dict[str, list[dict[str, Any]]]:
    """``{ASR stream: per-shard WER rows}`` for every ASR stream finished in some shard (plain data)."""
    return {name: wer_by_shard(cache, name).to_dict("records")
            for name, info in cache.streams.items() if info.kind == ASR_KIND and info.shards}


def format_wer(wer: dict[str, list[dict[str, Any]]]) -> list[str]:
    """``cache info``'s lines for :func:`wer_by_stream`'s result: a table per stream, with the corpus total."""
    out = []
    for name, rows in wer.items():
        if rows:
            w = pd.DataFrame(rows)
            total = w.word_errors.sum() / max(w.ref_words.sum(), 1)
            w["wer"] = w.wer.map(lambda x: f"{100 * x:.1f}%")
            out += [f"ASR word error rate ({name}, per shard; total {100 * total:.1f}%):", w.to_string(index=False), ""]
    return out
