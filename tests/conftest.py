"""Shared fixtures: tiny random Hugging Face models and small synthetic corpora.

The models are saved with ``save_pretrained`` and loaded back through the same
``from_pretrained(folder)`` path real models take. Nothing here reads ../shared or the hub.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"ssl": layer-norm HuBERT, "ssl_group": group-norm HuBERT, "asr": CTC model, "text": BERT}``."""
    from sercache.synthetic.models import make_bert, make_ctc, make_hubert

    root = tmp_path_factory.mktemp("models")
    return {
        "ssl": make_hubert(root / "hubert-layer", norm="layer"),
        "ssl_group": make_hubert(root / "hubert-group", norm="group"),
        "asr": make_ctc(root / "ctc"),
        "text": make_bert(root / "bert"),
        "text_cased": make_bert(root / "bert-cased", lowercase=False),
    }


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-session IEMOCAP release tree, 2 utterances per speaker and class (80 utterances)."""
    from sercache.synthetic.corpus import iemocap_like, write_iemocap_tree

    root = tmp_path_factory.mktemp("iemocap")
    return write_iemocap_tree(root, iemocap_like(2, durations=(0.6, 1.6)))


def extract_args(corpus: Path, out: Path, models: dict[str, Path], *extra: str,
                 streams: str = "ssl,asr,text_asr,text_gold,mfcc") -> list[str]:
    return ["extract", str(corpus), "--corpus", "iemocap", "--out", str(out), "--streams", streams,
            "--ssl-model", str(models["ssl"]), "--asr-model", str(models["asr"]), "--text-model", str(models["text"]),
            "--no-progress", *extra]
