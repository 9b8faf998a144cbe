"""Tiny random Hugging Face models, saved to folders and loaded like real ones.

They keep the real conv front end (7 layers, total stride 320 -> 50 frames/s), so frame
arithmetic, padding rules and chunking behave exactly as with full-size models.
"""
from __future__ import annotations

import json
from pathlib import Path

from sercache._typing import Pathlike

CTC_CHARS = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
WORDS = ["the", "a", "an", "i", "you", "he", "she", "it", "we", "they", "me", "my", "your", "is", "are", "was", "were", "be", "been", "do", "did", "does", "not", "no", "yes", "yeah", "oh", "ok", "okay", "what", "why", "how", "when", "where", "who", "that", "this", "there", "here", "and", "but", "or", "so", "if", "to", "of", "in", "on", "at", "for", "with", "from", "about", "know", "think", "just", "like", "really", "right", "well", "want", "going", "go", "get", "got", "can", "can't", "don't", "i'm", "it's", "that's", "excuse", "sorry", "thank", "thanks", "please", "hello", "hi", "good", "bad", "great", "sad", "happy", "angry", "mad", "fine", "love", "hate", "time", "day", "now", "never", "always", "again", "back", "home", "work", "money", "car", "told", "said", "say", "tell", "look", "come", "came", "make", "made", "one", "two", "let's", "alright", "maybe", "sure"]  # noqa: E501


def _small(config_kwargs: dict, hidden: int, layers: int) -> dict:
    base = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 16),
                intermediate_size=hidden * 2, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4, layerdrop=0.0, hidden_dropout=0.0, attention_dropout=0.0,
                activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, mask_time_prob=0.0)
    base.update(config_kwargs)
    return base


def make_hubert(path: Pathlike, *, hidden: int = 32, layers: int = 2, norm: str = "layer", seed: int = 0,
                **config_kwargs) -> Path:
    """A random HubertModel (``norm="layer"`` like hubert-large, ``"group"`` like hubert-base)."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    cfg = HubertConfig(**_small(dict(feat_extract_norm=norm, do_stable_layer_norm=(norm == "layer"),
                                     conv_bias=(norm == "layer"), **config_kwargs), hidden, layers))
    path = Path(path)
    HubertModel(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=(norm == "layer")).save_pretrained(path)
    return path


def make_hubert_base_size(path: Pathlike, seed: int = 0) -> Path:
    """A random model with HuBERT-base's dimensions (12 x 768, group norm): for benchmarks."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    path = Path(path)
    HubertModel(HubertConfig()).save_pretrained(path)  # HubertConfig defaults are hubert-base-ls960's
    Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False).save_pretrained(path)
    return path


def make_ctc(path: Pathlike, *, hidden: int = 32, layers: int = 2, norm: str = "group", seed: int = 1,
             **config_kwargs) -> Path:
    """A random Wav2Vec2ForCTC with a character vocabulary and processor files (like wav2vec2-large-960h)."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(CTC_CHARS)}
    (path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=(norm == "layer"))
    cfg = Wav2Vec2Config(**_small(dict(feat_extract_norm=norm, do_stable_layer_norm=(norm == "layer"),
                                       conv_bias=(norm == "layer"), vocab_size=len(vocab), pad_token_id=0,
                                       **config_kwargs), hidden, layers))
    model = Wav2Vec2ForCTC(cfg)
    with torch.no_grad():  # sharper, frame-dependent posteriors so random transcripts hold a few words
        model.lm_head.weight *= 10.0
        model.lm_head.bias[0] += 0.5
        model.lm_head.bias[4] += 0.3
    model.save_pretrained(path)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(path)
    return path


def make_bert(path: Pathlike, *, hidden: int = 32, layers: int = 2, seed: int = 2, lowercase: bool = True) -> Path:
    """A random BertModel with a small WordPiece vocabulary (uncased by default, like bert-base-uncased)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz" + ("" if lowercase else "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list(letters) + ["##" + c for c in letters]
             + list(".,?!'-0123456789"))
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(path / "vocab.txt"), do_lower_case=lowercase)
    tokenizer.save_pretrained(path)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 16), intermediate_size=hidden * 2,
                     max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    return path


def make_tiny_models(root: Pathlike, *, width: int = 32) -> dict[str, Path]:
    """The three stand-ins the demo and tests use: ``{"ssl": ..., "asr": ..., "text": ...}``.

    ``width`` is the hidden size of the speech and text encoders (2 layers each; the CTC model
    only writes transcripts and stays 32-d). Feature width matters to the heads' published
    settings: Adam moves each weight by about lr per step whatever the input size, so a head's
    outputs move in proportion to its input width, and lr 1e-5 that trains on 1024-d HuBERT
    frames barely moves a head on 32-d ones (the demo uses 256).
    """
    root = Path(root)
    out = {"ssl": root / "tiny-hubert", "asr": root / "tiny-wav2vec2-ctc", "text": root / "tiny-bert"}
    if not (out["ssl"] / "config.json").exists():
        make_hubert(out["ssl"], hidden=width)
    if not (out["asr"] / "config.json").exists():
        make_ctc(out["asr"])
    if not (out["text"] / "config.json").exists():
        make_bert(out["text"], hidden=width)
    for path in out.values():  # read by the notebook (and by anyone who finds the folder later)
        (path / "RANDOM_WEIGHTS.txt").write_text("Random weights made by sercache for its demo and tests: not a "
                                                 "trained model. Features from it show the pipeline, not emotion.\n")
    return out
