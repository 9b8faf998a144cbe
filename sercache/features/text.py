"""Token features of a frozen BERT-style text encoder, for ASR or gold transcripts."""
from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import torch

from sercache.features.base import STORAGE_DTYPES, BatchPolicy, Extractor, ExtractResult, TextItem, pooled_stats
from sercache.features.models import (
    check_text_encoder,
    is_uncased,
    load_text_encoder,
    model_reference,
    resolve_layers,
    text_tokenizer,
    weights_fingerprint,
)
from sercache.features.streams.base import ExtractError
from sercache.features.textnorm import sentence_case, strip_tags
from sercache.store.records import ExtractionProblem, UtteranceFeatures


def prepare_text(text: str, source: str, uncased: bool) -> str:
    """The exact string fed to the tokenizer.

    Gold transcripts lose their non-speech tags (``[LAUGHTER]``). ASR output from wav2vec2 is
    upper case: an uncased model gets it lower-cased (what its tokenizer does anyway, made
    explicit so the stored text is what the model saw); a cased model gets sentence case,
    because all-caps words tokenize into rare upper-case pieces.
    """
    text = strip_tags(text)
    if uncased:
        return text.lower()
    if source == "asr" and text.isupper():
        return sentence_case(text)
    return text


def word_index_of(spans: list[tuple[int, int]], text: str) -> np.ndarray:
    """For each token's character span, the index of the whitespace-separated word holding it (-1: special)."""
    starts, pos = [], 0
    for word in text.split():
        pos = text.index(word, pos)
        starts.append(pos)
        pos += len(word)
    out = np.full(len(spans), -1, dtype=np.int32)
    for i, (a, b) in enumerate(spans):
        if b > a:
            out[i] = bisect.bisect_right(starts, a) - 1
    return out


class TextExtractor(Extractor):
    """Hidden states of a text encoder over one transcript source (``asr`` or ``gold``).

    Stored per token: the selected layers, the token string, its character span in the
    stored input text and the index of its word; per utterance: the input text and pooled
    statistics (over all tokens, special tokens included) of every layer.
    """

    kind = "text"
    input = "text"

    def __init__(self, model: str, source: str, layers: str | None = None, *, device: str = "cpu",
                 precision: str = "fp32", dtype: str = "float16", batch_size: int = 32) -> None:
        if source not in ("asr", "gold"):
            raise ExtractError(f"text source {source!r}: use 'asr' or 'gold'")
        if dtype not in STORAGE_DTYPES:
            raise ExtractError(f"--dtype {dtype!r}: use one of {sorted(STORAGE_DTYPES)}")
        model = model_reference(model)
        self.model_name = model
        self.config = config = check_text_encoder(model)
        self.tokenizer = text_tokenizer(model)
        self.uncased = is_uncased(self.tokenizer)
        self.fingerprint = weights_fingerprint(model)
        self.source = source
        self.layers = resolve_layers(layers, int(config.num_hidden_layers), model, option="--text-layers")
        self.pooled_layers = list(range(int(config.num_hidden_layers) + 1))
        self.dtype_name, self.dtype = dtype, STORAGE_DTYPES[dtype]
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.model = None
        limits = [getattr(config, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)]
        # RoBERTa-style models reserve position ids up to the padding index.
        reserved = 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        self.max_tokens = min(int(x) for x in limits if x and x < 10**6) - reserved

    def load(self) -> None:
        if self.model is None:
            self.model = load_text_encoder(self.model_name).to(self.device)

    def identity(self) -> dict[str, Any]:
        c = self.config
        return {"kind": self.kind, "source": self.source, "model": self.model_name, "weights": self.fingerprint,
                "model_type": c.model_type, "hidden_size": int(c.hidden_size), "layers": self.layers,
                "dtype": self.dtype_name, "precision": self.precision, "uncased": self.uncased,
                "max_tokens": self.max_tokens}

    def details(self) -> dict[str, Any]:
        return dict(super().details(), device=str(self.device), batch_size=self.batch_size)

    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(budget_seconds=0.0, pad_safe=True, max_items=self.batch_size)

    @torch.inference_mode()
    def extract(self, items: list[TextItem]) -> ExtractResult:
        self.load()
        result = ExtractResult()
        texts = [prepare_text(it.text, self.source, self.uncased) for it in items]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                             return_offsets_mapping=True, return_tensors="pt")
        spans = enc.pop("offset_mapping")
        for i, it in enumerate(items):
            n_full = len(self.tokenizer(texts[i], truncation=False)["input_ids"])
            if n_full > self.max_tokens:
                result.problems.append(ExtractionProblem(
                    it.utt_id, it.path, self.kind, f"text has {n_full} tokens; truncated to the model's "
                    f"{self.max_tokens}", severity="warning"))
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        autocast = (torch.autocast(self.device.type, dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)
                    if self.precision != "fp32" else torch.autocast(self.device.type, enabled=False))
        with autocast:
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"]
        for i, (it, text) in enumerate(zip(items, texts)):
            n = int(mask[i].sum())
            stacked = torch.stack([h[i, :n] for h in hidden])
            mean, std = pooled_stats(stacked, self.dtype)
            ids = enc["input_ids"][i, :n].tolist()
            span = [tuple(map(int, s)) for s in spans[i, :n].tolist()]
            frames = {f"layer_{k}": hidden[k][i, :n].float().cpu().numpy().astype(self.dtype) for k in self.layers}
            frames.update(token=np.array(self.tokenizer.convert_ids_to_tokens(ids), dtype=object),
                          word_index=word_index_of(span, text), char_span=np.array(span, dtype=np.int32).reshape(-1, 2))
            result.records.append(UtteranceFeatures(
                it.utt_id, frames, {"text": text, "pooled_mean": mean, "pooled_std": std,
                                    "n_words": np.int32(len(text.split()))}))
        return result

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
