"""Transcripts from a frozen wav2vec2 CTC model: greedy decoding with confidences and timestamps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jiwer
import numpy as np
import torch

from sercache.features.base import AudioItem, ExtractResult
from sercache.features.models import check_ctc_model, ctc_tokenizer
from sercache.features.ssl import AudioModelExtractor
from sercache.features.textnorm import normalize_for_wer
from sercache.store.records import UtteranceFeatures

#: what word_errors compares (recorded in every ASR stream's provenance details)
WER_NORMALIZATION = "upper case; [tags] and punctuation removed; apostrophes kept"


@dataclass
class Decoded:
    text: str
    tokens: list[str]
    confidence: np.ndarray   # (tokens,) CTC: mean posterior of the token over its frames; Whisper: its probability
    start_frame: np.ndarray  # (tokens,) first frame of the token
    end_frame: np.ndarray    # (tokens,) one past its last frame


def greedy_ctc(log_probs: torch.Tensor, id_to_token: list[str], blank_id: int, skip_ids: set[int],
               word_delimiter: str) -> Decoded:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: ``(frames, vocab)`` log posteriors of one utterance.
    """
    probs, ids = log_probs.float().exp().max(dim=-1)
    ids, probs = ids.cpu().numpy(), probs.cpu().numpy()
    # Frames whose best token is special but not blank (<s>, </s>, <unk>) are transparent:
    # they neither emit nor split a run, as in the model's own decode(skip_special_tokens=True).
    frames = [t for t in range(len(ids)) if ids[t] not in skip_ids]
    tokens, conf, start, end = [], [], [], []
    k = 0
    while k < len(frames):
        j = k
        while j + 1 < len(frames) and ids[frames[j + 1]] == ids[frames[k]]:
            j += 1
        if ids[frames[k]] != blank_id:
            run = frames[k:j + 1]
            tokens.append(id_to_token[ids[run[0]]])
            conf.append(float(probs[run].mean()))
            start.append(run[0])
            end.append(run[-1] + 1)
        k = j + 1
    text = " ".join("".join(" " if tok == word_delimiter else tok for tok in tokens).split())
    return Decoded(text, tokens, np.array(conf, np.float32), np.array(start, np.int32), np.array(end, np.int32))


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit operations, reference words) after WER normalisation; jiwer does the alignment."""
    ref, hyp = normalize_for_wer(reference), normalize_for_wer(hypothesis)
    n_ref = len(ref.split())
    if n_ref == 0:
        return 0, 0
    if not hyp:
        return n_ref, n_ref
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, n_ref


class CTCExtractor(AudioModelExtractor):
    """ASR transcripts: text, per-token confidence and frame span, and WER against the gold text.

    The ragged axis of this stream is CTC tokens (characters and the word delimiter), not frames.
    """

    kind = "asr"
    ctc = True

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        tok = ctc_tokenizer(model)
        vocab = tok.get_vocab()
        self.id_to_token = [""] * (max(vocab.values()) + 1)
        for token, i in vocab.items():
            self.id_to_token[i] = token
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else tok.pad_token_id
        self.blank_id = int(pad)
        self.word_delimiter = tok.word_delimiter_token
        self.skip_ids = {i for i in tok.all_special_ids if self.id_to_token[i] != self.word_delimiter}

    def _check(self, model: str) -> Any:
        return check_ctc_model(model)

    def _select(self, output: Any) -> list[torch.Tensor]:
        return [output.logits.float().log_softmax(-1)]

    def identity(self) -> dict[str, Any]:
        return dict(super().identity(), decoder="greedy-ctc")

    def details(self) -> dict[str, Any]:
        return dict(super().details(), wer_normalization=WER_NORMALIZATION)

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        result = ExtractResult()
        for it, (log_probs,) in zip(items, self._encode(items, result)):
            d = greedy_ctc(log_probs, self.id_to_token, self.blank_id, self.skip_ids, self.word_delimiter)
            result.records.append(transcript_record(it, d, log_probs.shape[0]))
        return result


def transcript_record(item: AudioItem, d: Decoded, n_frames: int, **more: Any) -> UtteranceFeatures:
    """An ``asr`` stream's record (CTC or Whisper): the tokens, and the text with its word errors.

    Args:
        n_frames: length of the frame grid that ``start_frame``/``end_frame`` index (50 frames/s).
        more: further per-utterance fields (Whisper's ``language``).
    """
    errors, n_ref = word_errors(item.transcript, d.text)
    return UtteranceFeatures(
        item.utt_id,
        {"token": np.array(d.tokens, dtype=object), "confidence": d.confidence,
         "start_frame": d.start_frame, "end_frame": d.end_frame},
        {"text": d.text, "wer": np.float32(errors / n_ref if n_ref else np.nan), "word_errors": np.int32(errors),
         "ref_words": np.int32(n_ref), "n_frames": np.int32(n_frames), "n_samples": np.int64(len(item.samples)),
         **more})
