"""CTC greedy decoding, confidences, timestamps and WER."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sercache.features.asr import CTCExtractor, greedy_ctc, word_errors
from sercache.features.base import AudioItem
from sercache.features.textnorm import normalize_for_wer

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B"]


def _log_probs(ids: list[int], p: list[float]) -> torch.Tensor:
    """Frames whose argmax is ``ids[t]`` with posterior ``p[t]`` (rest spread evenly)."""
    out = np.zeros((len(ids), len(VOCAB)))
    for t, (i, q) in enumerate(zip(ids, p)):
        out[t] = (1 - q) / (len(VOCAB) - 1)
        out[t, i] = q
    return torch.log(torch.tensor(out))


def test_greedy_ctc_tokens_confidence_and_frames():
    ids = [5, 5, 0, 6, 4, 4, 1, 6, 0, 0, 5, 5, 5]
    p = [0.9, 0.7, 0.99, 0.6, 0.8, 0.6, 0.9, 0.5, 0.9, 0.9, 0.4, 0.5, 0.6]
    d = greedy_ctc(_log_probs(ids, p), VOCAB, blank_id=0, skip_ids={1, 2, 3}, word_delimiter="|")
    assert d.tokens == ["A", "B", "|", "B", "A"]  # <s> is transparent; repeats merged; blanks split runs
    assert d.text == "AB BA"
    np.testing.assert_allclose(d.confidence, [0.8, 0.6, 0.7, 0.5, 0.5], rtol=1e-6)
    assert d.start_frame.tolist() == [0, 3, 4, 7, 10]
    assert d.end_frame.tolist() == [2, 4, 6, 8, 13]


def test_greedy_ctc_blank_only_gives_empty_transcript():
    d = greedy_ctc(_log_probs([0, 0, 0], [0.9] * 3), VOCAB, 0, set(), "|")
    assert d.text == "" and d.tokens == [] and d.confidence.shape == (0,)


def test_wer_normalisation_and_counts():
    assert normalize_for_wer("Excuse me. [LAUGHTER] Don't-go!") == "EXCUSE ME DON'T GO"
    assert word_errors("Excuse me. [BREATHING]", "EXCUSE ME") == (0, 2)
    assert word_errors("hello there my friend", "HELLO THEIR FRIEND") == (2, 4)  # 1 sub + 1 del
    assert word_errors("yes", "") == (1, 1)
    assert word_errors("", "ANYTHING") == (0, 0)  # no reference: no WER


def test_ctc_extractor_matches_hf_decoding(models):
    from transformers import AutoModelForCTC, AutoProcessor

    ext = CTCExtractor(str(models["asr"]))
    rng = np.random.default_rng(3)
    wave = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    rec = ext.extract([AudioItem("u1", "", wave, transcript="hello there")]).records[0]
    proc = AutoProcessor.from_pretrained(models["asr"])
    model = AutoModelForCTC.from_pretrained(models["asr"]).eval()
    x = torch.from_numpy((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))[None]
    with torch.inference_mode():
        ids = model(x).logits.argmax(-1)
    assert rec.per_utterance["text"] == proc.batch_decode(ids, skip_special_tokens=True)[0].strip()
    assert rec.per_utterance["text"]  # the stand-in model does emit characters
    assert rec.per_utterance["n_frames"] == ids.shape[1] == ext.frontend.n_frames(32000)
    assert rec.frames["token"].shape == rec.frames["confidence"].shape == rec.frames["start_frame"].shape
    assert ((rec.frames["confidence"] > 0) & (rec.frames["confidence"] <= 1)).all()
    assert (np.diff(rec.frames["start_frame"]) > 0).all() and (rec.frames["end_frame"] > rec.frames["start_frame"]).all()
    errors, ref = word_errors("hello there", rec.per_utterance["text"])
    assert rec.per_utterance["word_errors"] == errors and rec.per_utterance["ref_words"] == ref == 2
    assert rec.per_utterance["wer"] == pytest.approx(errors / 2)


def test_special_tokens_are_transparent_like_hf_skip_special_tokens():
    d = greedy_ctc(_log_probs([5, 1, 5, 0, 5], [0.9, 0.5, 0.7, 0.9, 0.6]), VOCAB, 0, {1, 2, 3}, "|")
    assert d.tokens == ["A", "A"] and d.text == "AA"
    assert d.start_frame.tolist() == [0, 4] and d.end_frame.tolist() == [3, 5]
    np.testing.assert_allclose(d.confidence, [0.8, 0.6], rtol=1e-6)
