"""A tiny random Whisper that transcribes: model, tokenizer, feature extractor and generation config.

Laid out like a real multilingual checkpoint (openai/whisper-*), only small: byte-level BPE
text tokens first, then ``<|endoftext|>`` and the special tokens, then one timestamp token per
20 ms of the window, so ``generate`` (language detection, long-form decoding, timestamps) and
the token-timestamp alignment run through the same code paths as with real weights. The
window is ``window_seconds`` (default 2 s: ``max_source_positions`` 100), so audio beyond it
takes transformers' long-form path on short test audio, as audio beyond 30 s does on a real model.
"""
from __future__ import annotations

from pathlib import Path

from sercache._typing import Pathlike

#: the special tokens after <|endoftext|>, in a real checkpoint's order (languages shortened to two)
LANGUAGES = ("en", "de")
SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES), "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>")
#: a few merges, so some tokens span several bytes (and whole words) as in a real vocabulary
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("e", "r"), ("Ġ", "s"), ("e", "n")]


def make_whisper_asr(path: Pathlike, *, window_seconds: int = 2, d_model: int = 16, seed: int = 0,
                     alignment_heads: bool = True, multilingual: bool = True, max_tokens: int = 16) -> Path:
    """Save a random ``WhisperForConditionalGeneration`` and everything ``from_pretrained`` reads.

    Args:
        window_seconds: the encoder's window (a real Whisper's is 30 s).
        alignment_heads: whether the generation config names cross-attention heads for token timestamps.
        multilingual: False builds an English-only model (no language or task tokens in use).
        max_tokens: the decoder's positions (a real Whisper's: 448), prompt included.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(dict.fromkeys(alphabet + ["".join(m) for m in MERGES]))}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=list(MERGES))
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(window_seconds * 50 + 1)])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    assert ids["<|endoftext|>"] == len(vocab), "special tokens must follow the text tokens, as in Whisper"
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    eos, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=d_model, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_source_positions=window_seconds * 50, max_target_positions=max_tokens,
        dropout=0.0, pad_token_id=eos, bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=sot,
        begin_suppress_tokens=None, suppress_tokens=None, tie_word_embeddings=False,
        architectures=["WhisperForConditionalGeneration"])
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # peaked next-token distributions, as a trained model's: no near-ties that the
        model.proj_out.weight.normal_(0.0, 1.0)  # last float bit of one attention kernel or another could flip
    model.save_pretrained(path)
    generation = dict(
        decoder_start_token_id=sot, eos_token_id=eos, pad_token_id=eos, bos_token_id=eos, max_length=max_tokens,
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, begin_suppress_tokens=[eos], is_multilingual=multilingual,
        suppress_tokens=[i for t, i in ids.items() if t != "<|endoftext|>"])  # as real configs: no specials in text
    if multilingual:
        generation.update(lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGES},
                          task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]})
    if alignment_heads:
        generation["alignment_heads"] = [[0, 0], [1, 1]]
    GenerationConfig(**generation).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80, chunk_length=window_seconds).save_pretrained(path)
    return path
