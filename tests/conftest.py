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


@pytest.fixture(scope="session")
def extracted_cache(small_corpus, models, tmp_path_factory) -> Path:
    """`sercache extract` of :func:`small_corpus` with every stream (ssl with all layers). Read-only!"""
    from click.testing import CliRunner

    from sercache.cli import cli

    out = tmp_path_factory.mktemp("cache") / "cache"
    result = CliRunner().invoke(cli, extract_args(small_corpus, out, models, "--layers", "all"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`sercache demo`'s output (corpus, cache, gate and cmgi runs); slow tests only. Read-only!"""
    from sercache.demo import run_demo

    said: list[str] = []
    result = run_demo(tmp_path_factory.mktemp("demo") / "out", jobs=2, progress=False, say=said.append)
    result.said = said
    return result


def synthetic_manifest(n_per_speaker_label: int = 6, seed: int = 0):  # noqa: ANN201 - DataFrame
    """An IEMOCAP-shaped manifest (5 sessions x 2 speakers x 4 classes) with votes, V/A/D and transcripts."""
    from sercache.synthetic.cache import manifest_from_rows
    from sercache.synthetic.corpus import VAD, VOTE_NAMES, iemocap_like

    rows = []
    for u in iemocap_like(n_per_speaker_label, seed=seed):
        v, a, d = VAD[u.label]
        rows.append({"utt_id": u.utt_id, "session": u.session, "speaker": u.utt_id[:5] + u.speaker_gender,
                     "gender": u.speaker_gender, "dialog_type": "impro" if "_impro" in u.utt_id else "script",
                     "duration_s": u.duration_s, "emotion": u.label, "transcript": u.transcript,
                     "valence": v, "arousal": a, "dominance": d,
                     "votes": {"C-E1": [VOTE_NAMES[u.label]], "C-E2": [VOTE_NAMES[u.label], "Neutral"]}})
    return manifest_from_rows(rows)


def write_signal_cache(out: Path, manifest, signal: float = 1.0):  # noqa: ANN001, ANN201
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache

    return write_synthetic_cache(out, manifest, [
        SyntheticStream("ssl", "ssl", 32, (0, 1, 2), signal=signal),
        SyntheticStream("text_asr", "text", 16, signal=signal),
        SyntheticStream("text_gold", "text", 16, signal=signal),
        SyntheticStream("mfcc", "mfcc", 26, dtype="float32", signal=2 * signal)])


@pytest.fixture(scope="session")
def signal_cache(tmp_path_factory) -> Path:
    """A 240-utterance synthetic cache whose features carry a class-specific direction. Read-only!"""
    return write_signal_cache(tmp_path_factory.mktemp("signal") / "cache", synthetic_manifest())


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory) -> Path:
    """80 utterances (5 sessions x 2 speakers x 4 classes x 2) whose features carry the class. Read-only!"""
    return write_signal_cache(tmp_path_factory.mktemp("small") / "cache", synthetic_manifest(2))


#: A one-fold linear probe on the mfcc stream: the smallest real run (see trained_linear_probe).
LINEAR_PROBE = ["--head", "linear", "--audio-stream", "mfcc", "--fold", "1", "--device", "cpu", "--no-progress"]


def trained_linear_probe(cache: Path, run: Path, *options: str) -> Path:
    """``sercache train CACHE`` + LINEAR_PROBE + ``options`` into ``run``, which must succeed."""
    from click.testing import CliRunner

    from sercache.cli import cli

    result = CliRunner().invoke(cli, ["train", str(cache), *LINEAR_PROBE, *options, "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:  # noqa: ANN001 - the requesting module's trained_run fixture
    """A writable copy of the module's ``trained_run`` (a module-scoped fixture each such module defines)."""
    import shutil

    return Path(shutil.copytree(trained_run, tmp_path / "run"))
