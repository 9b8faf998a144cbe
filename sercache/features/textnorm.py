"""Text normalisation shared by WER scoring and the text streams."""
from __future__ import annotations

import re

_TAG = re.compile(r"\[[^\]]*\]|<[^>]*>")  # IEMOCAP non-speech tags: [LAUGHTER], [BREATHING], <...>
_NON_WORD = re.compile(r"[^A-Z0-9' ]+")
_SPACES = re.compile(r"\s+")


def strip_tags(text: str) -> str:
    """Drop bracketed annotations and squeeze whitespace (gold transcripts)."""
    return _SPACES.sub(" ", _TAG.sub(" ", text)).strip()


def normalize_for_wer(text: str) -> str:
    """Upper case, tags and punctuation removed (apostrophes kept), single spaces."""
    text = strip_tags(text).upper().replace("-", " ")
    return _SPACES.sub(" ", _NON_WORD.sub("", text)).strip()


def sentence_case(text: str) -> str:
    """Upper-case ASR output ("I DON'T KNOW") for a cased text model: "I don't know"."""
    words = text.lower().split()
    words = ["I" + w[1:] if w == "i" or w.startswith("i'") else w for w in words]
    out = " ".join(words)
    return out[:1].upper() + out[1:]
