"""``text_asr`` and ``text_gold``: a BERT-style text encoder over the ASR or the gold transcripts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sercache.features.streams import register_stream
from sercache.features.streams.base import Runtime, StreamConfig, StreamKind, StreamOption

DEFAULT_TEXT_MODEL = "bert-base-uncased"


@dataclass
class TextConfig(StreamConfig):
    model: str = DEFAULT_TEXT_MODEL
    source: str = "gold"                    # "asr" | "gold": which transcripts
    layers: str | list[int] | None = None
    dtype: str = "float16"
    precision: str = "fp32"
    batch_size: int = 32                    # texts per batch (not in the identity: changes no number)


def build(c: TextConfig, rt: Runtime) -> Any:
    from sercache.features.text import TextExtractor

    return TextExtractor(c.model, c.source, c.layers, device=rt.device, precision=c.precision, dtype=c.dtype,
                         batch_size=c.batch_size)


def check_tokens(f: Any, index: Any, bad: Any) -> None:
    """``cache verify``: every text, even an empty one, encodes to at least [CLS] [SEP]."""
    import numpy as np

    if "n_samples" in f["per_utterance"] and index.attrs.get("frame_rule"):
        return  # audio-framed (the asr stream's CTC tokens): its frame rule is checked instead
    if "token" in f["frames"] and "text" in f["per_utterance"] and index.utt_ids and (index.lengths < 2).any():
        for u in np.array(index.utt_ids)[index.lengths < 2]:
            bad(u, "text stream holds fewer than 2 tokens (even an empty text has [CLS] [SEP])")


OPTIONS = (
    StreamOption("text_model", DEFAULT_TEXT_MODEL, "HF id or local folder of a BERT-style text encoder.",
                 flag="--text-model", field="model"),
    StreamOption("text_layers", None, "Text-encoder layers to store. Default: last.", flag="--text-layers",
                 field="layers"),
    StreamOption("text_batch_size", 32, "texts per batch", field="batch_size", type=int,
                 check=(lambda v: v >= 1, "at least 1")),
)
register_stream(
    StreamKind("text_asr", "text encoder over the ASR transcripts", TextConfig, build, OPTIONS, order=30,
               default=True, model_option="--text-model", identity_kind="text", needs="asr",
               constants={"source": "asr"}, verify=(check_tokens,)),
    StreamKind("text_gold", "text encoder over the gold transcripts", TextConfig, build,
               uses=tuple(o.dest for o in OPTIONS), order=31, default=True, model_option="--text-model",
               identity_kind="text", constants={"source": "gold"}),
)
