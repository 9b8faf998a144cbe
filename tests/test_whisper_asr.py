"""The ``asr`` stream decoding with Whisper: a tiny random Whisper (sercache.synthetic.whisper) through the
real paths, checked against transformers' own ``generate``; and one real-weights test (whisper-base
hearing a sentence espeak-ng speaks) where ``../shared/models/whisper-base`` exists.

The tiny model's window is 2 s, so a 5 s clip takes transformers' long-form path as audio beyond
30 s does on a real model.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sercache.features.base import AudioItem  # noqa: E402
from sercache.features.streams import Runtime, build_extractor  # noqa: E402
from sercache.features.streams.asr import ASRConfig  # noqa: E402
from sercache.features.whisper_asr import WhisperASRExtractor  # noqa: E402
from sercache.synthetic.whisper import make_whisper_asr  # noqa: E402

SR = 16_000
REPO = Path(__file__).resolve().parents[1]
WHISPER_BASE = REPO.parent / "shared" / "models" / "whisper-base"


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_whisper_asr(tmp_path_factory.mktemp("models") / "tiny-whisper")


def asr(model: Path | str, language: str = "detect", batch_seconds: float | None = None) -> WhisperASRExtractor:
    ext = build_extractor("asr", ASRConfig(model=str(model), language=language), Runtime("cpu", batch_seconds))
    assert isinstance(ext, WhisperASRExtractor)
    return ext


def wave(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def reference(model: Path, samples: np.ndarray, **generate: object) -> str:
    """transformers on its own: the transcript of one clip, as ``generate`` decodes it (task: transcribe)."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    fe = WhisperFeatureExtractor.from_pretrained(model)
    long = len(samples) > fe.n_samples  # else one decoding of the window
    mel = fe([samples], sampling_rate=SR, return_tensors="pt",
             **(dict(padding="longest", truncation=False) if long else {})).input_features
    generate = generate if long else dict(generate, force_unique_generate_call=True)
    whisper = WhisperForConditionalGeneration.from_pretrained(model).eval()
    ids = whisper.generate(mel, task="transcribe", **generate)[0].tolist()
    # text tokens only: a random model also emits timestamp tokens where a trained one never does
    text = [i for i in ids if i < whisper.generation_config.no_timestamps_token_id]
    return AutoTokenizer.from_pretrained(model).decode(text, skip_special_tokens=True).strip()


def test_transcripts_confidences_timestamps_and_detected_language(whisper):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    lengths = (0.3, 0.9, 1.4, 2.0)
    items = [AudioItem(f"u{i}", "", wave(s, seed=i), transcript="the cat") for i, s in enumerate(lengths)]
    ext = asr(whisper)
    assert ext.batch_policy().max_items > 1 and ext.identity()["language"] == "detect"
    records = ext.extract(items)
    model = WhisperForConditionalGeneration.from_pretrained(whisper).eval()
    fe = WhisperFeatureExtractor.from_pretrained(whisper)
    for it, rec in zip(items, records.records):
        language = model.detect_language(fe([it.samples], sampling_rate=SR, return_tensors="pt").input_features)
        detected = ext.lang_of_id[int(language[0])]
        assert rec.per_utterance["language"] == detected
        text = reference(whisper, it.samples, language=detected)
        assert rec.per_utterance["text"] == text != ""
        n = len(it.samples)
        assert rec.per_utterance["n_frames"] == -(-n // 320) and rec.per_utterance["n_samples"] == n
        frames = rec.frames
        assert len(frames["token"]) == len(frames["confidence"]) == len(frames["start_frame"]) > 0
        assert "".join(frames["token"]).strip() == text
        assert ((frames["confidence"] >= 0) & (frames["confidence"] <= 1)).all()
        start, end = frames["start_frame"], frames["end_frame"]
        assert (np.diff(start) >= 0).all() and (end >= start).all() and (start >= 0).all()
        assert end.max() <= rec.per_utterance["n_frames"]
        assert rec.per_utterance["ref_words"] == 2
    # batching changes nothing: each clip's alignment uses its own tokens only
    alone = asr(whisper, batch_seconds=0)
    assert alone.batch_policy().max_items == 1 and asr(whisper, batch_seconds=6).batch_policy().max_items == 3
    for it, rec in zip(items, records.records):
        again = alone.extract([it]).records[0]
        assert again.per_utterance["text"] == rec.per_utterance["text"]
        assert list(again.frames["token"]) == list(rec.frames["token"])
        np.testing.assert_allclose(again.frames["confidence"], rec.frames["confidence"], rtol=1e-4)
        np.testing.assert_array_equal(again.frames["start_frame"], rec.frames["start_frame"])


def test_a_given_language_is_used_and_recorded(whisper):
    samples = wave(1.2, seed=5)
    for language in ("en", "german"):  # a code, or an English name
        ext = asr(whisper, language)
        code = {"german": "de"}.get(language, language)
        assert ext.identity()["language"] == code
        rec = ext.extract([AudioItem("u", "", samples)]).records[0]
        assert rec.per_utterance["language"] == code
        assert rec.per_utterance["text"] == reference(whisper, samples, language=code)


def test_long_audio_is_decoded_window_after_window(whisper):
    samples = wave(5.0, seed=3)
    ext = asr(whisper, "de")
    rec = ext.extract([AudioItem("long", "", samples)]).records[0]
    text = reference(whisper, samples, language="de", return_timestamps=True)
    first_window = reference(whisper, samples[: 2 * SR], language="de", return_timestamps=True)
    assert rec.per_utterance["text"] == text and len(text) > len(first_window)
    n_frames = rec.per_utterance["n_frames"]
    start, end = rec.frames["start_frame"], rec.frames["end_frame"]
    assert n_frames == 250 and end.max() <= n_frames and (end >= start).all()
    assert start.max() >= 100  # tokens of later windows sit beyond the first 2 s (100 frames)


def test_transformers_generate_noise_is_not_shown_and_other_warnings_are(whisper):
    """transformers' Whisper ``generate`` logs warnings about its own internal calls (one says "you may observe
    unexpected behavior"); a batch of short clips and a long one decode without them, and the loggers keep
    everything else once the call is over."""
    import logging

    from transformers.utils import logging as hf_logging

    from sercache.features.whisper_asr import GENERATE_LOGGERS, GENERATE_NOISE

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    keep, library = Keep(), logging.getLogger("transformers")
    library.addHandler(keep)
    try:
        hf_logging.warning_once.cache_clear()  # each is logged once per process: an earlier test may have used it
        items = [AudioItem(f"u{i}", "", wave(0.6 + 0.4 * i, seed=i)) for i in range(3)] + [
            AudioItem("long", "", wave(5.0, seed=3))]
        records = asr(whisper).extract(items).records
        assert len(records) == 4 and records[-1].per_utterance["n_frames"] == 250
        assert not [m for m in keep.messages if m.startswith(GENERATE_NOISE)], keep.messages
        for name in GENERATE_LOGGERS:  # the filter is gone after the call: the same message reaches the handler
            logging.getLogger(name).warning(GENERATE_NOISE[0])
        assert keep.messages.count(GENERATE_NOISE[0]) == len(GENERATE_LOGGERS)
    finally:
        library.removeHandler(keep)


def test_without_alignment_heads_each_token_spans_its_segment(whisper, tmp_path):
    plain = make_whisper_asr(tmp_path / "no-heads", alignment_heads=False)  # same seed: same weights
    samples = wave(1.5, seed=2)
    ext = asr(plain, "en")
    assert ext.identity()["timestamps"] == "segments" and asr(whisper, "en").identity()["timestamps"] == "alignment-heads"
    rec = ext.extract([AudioItem("u", "", samples)]).records[0]
    assert rec.per_utterance["text"] == asr(whisper, "en").extract([AudioItem("u", "", samples)]).records[0].per_utterance["text"]
    assert set(rec.frames["start_frame"]) == {0} and set(rec.frames["end_frame"]) == {rec.per_utterance["n_frames"]}


def test_wrong_models_and_languages_are_refused_by_name(whisper, tmp_path):
    from sercache.features.models import ModelError, check_asr_model
    from sercache.synthetic.models import make_bert, make_ctc

    with pytest.raises(ModelError, match=r"--asr-language 'xx'.*has no such language \(it knows de, en\)"):
        asr(whisper, "xx")
    bert = make_bert(tmp_path / "bert")
    with pytest.raises(ModelError, match=r"--asr-model .*bert.* is a 'bert' model, neither CTC nor Whisper"):
        build_extractor("asr", ASRConfig(model=str(bert)), Runtime())
    ctc = make_ctc(tmp_path / "ctc")
    with pytest.raises(ModelError, match="--asr-language 'de' applies to Whisper models"):
        check_asr_model(str(ctc), "de")
    english = make_whisper_asr(tmp_path / "english", multilingual=False)
    assert asr(english, "en").identity()["language"] == "en"
    with pytest.raises(ModelError, match=r"--asr-language 'de'.*\(it knows en\)"):
        asr(english, "de")


def test_cluster_check_accepts_whisper_and_refuses_a_bad_language(whisper, tmp_path):
    from sercache.extract.cluster import check_before_submitting
    from sercache.extract.options import ExtractOptions
    from sercache.features.models import ModelError

    root = tmp_path / "emodb"
    root.mkdir()
    check_before_submitting(ExtractOptions(root, "emodb", tmp_path / "out", streams=("asr",), asr_model=str(whisper),
                                           asr_language="de"))
    with pytest.raises(ModelError, match="--asr-language 'klingon'"):
        check_before_submitting(ExtractOptions(root, "emodb", tmp_path / "out", streams=("asr",),
                                               asr_model=str(whisper), asr_language="klingon"))


def emodb_corpus(root: Path) -> Path:
    """An EmoDB-layout corpus: four clips of noise named like the release's files."""
    from tests.test_corpora import write_wav

    for i, name in enumerate(("03a01Fa", "08a02Nc", "11b10Wa", "16b03Tc")):
        write_wav(root / "wav" / f"{name}.wav", int(SR * (0.8 + 0.3 * i)), seed=i)
    return root


def test_emodb_through_the_cli_text_streams_wer_report_and_rebuild(whisper, tmp_path):
    from click.testing import CliRunner

    from sercache.cli import cli
    from sercache.corpora.emodb import EMODB_TEXTS
    from sercache.features.asr_report import transcripts, wer_by_shard
    from sercache.features.audio import load_audio
    from sercache.features.rebuild import extractor_for
    from sercache.store import open_cache
    from sercache.synthetic.models import make_bert, make_ctc

    root, out = emodb_corpus(tmp_path / "emodb"), tmp_path / "cache"
    bert = make_bert(tmp_path / "bert")
    args = ["extract", str(root), "--corpus", "emodb", "--out", str(out), "--streams", "asr,text_asr,text_gold",
            "--asr-model", str(whisper), "--asr-language", "de", "--text-model", str(bert), "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli, ["cache", "verify", str(out)]).exit_code == 0
    info = CliRunner().invoke(cli, ["cache", "info", str(out)])
    assert "ASR word error rate (asr" in info.output
    with open_cache(out) as cache:
        hyp = transcripts(cache, "asr").set_index("utt_id")
        gold = {u: EMODB_TEXTS[u[2:5]] for u in hyp.index}
        assert (hyp.language == "de").all() and hyp.transcript.to_dict() == gold
        assert hyp.ref_words.tolist() == [len(gold[u].split()) for u in hyp.index]
        wer = wer_by_shard(cache, "asr")
        assert int(wer.ref_words.sum()) == sum(len(t.split()) for t in gold.values())
        for u in hyp.index:
            # text_asr encodes what Whisper heard (whitespace collapsed, lower-cased for the uncased encoder)
            assert cache.per_utterance("text_asr", "text", [u])[0] == " ".join(hyp.loc[u, "text"].split()).lower()
            assert cache.per_utterance("text_gold", "text", [u])[0] == gold[u].lower()
        provenance = cache.streams["asr"].provenance
        paths = dict(zip(cache.utterances.utt_id, cache.utterances.path))
    assert provenance["identity"]["decoder"] == "whisper-generate" and provenance["identity"]["language"] == "de"
    rebuilt = extractor_for("asr", provenance)  # what predict does for new audio
    assert isinstance(rebuilt, WhisperASRExtractor) and rebuilt.identity() == provenance["identity"]
    u = hyp.index[0]
    again = rebuilt.extract([AudioItem(u, "", load_audio(paths[u]).samples)]).records[0]
    assert again.per_utterance["text"] == hyp.loc[u, "text"]
    # and a CTC stream still rebuilds as CTC
    from sercache.features.asr import CTCExtractor

    ctc = CTCExtractor(str(make_ctc(tmp_path / "ctc")))
    assert type(extractor_for("asr", ctc.provenance())) is CTCExtractor


@pytest.mark.skipif(not WHISPER_BASE.is_dir(), reason=f"real weights not here: {WHISPER_BASE}")
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_whisper_base_transcribes_a_spoken_sentence(tmp_path):
    """Real weights: whisper-base hears what espeak-ng says after a second of silence."""
    import soundfile as sf

    from sercache.features.audio import load_audio
    from sercache.features.textnorm import normalize_for_wer

    sentence = "The quick brown fox jumps over the lazy dog."
    spoken = tmp_path / "spoken.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(spoken), sentence], check=True)
    speech = load_audio(spoken).samples
    audio = np.concatenate([np.zeros(SR, np.float32), speech])
    sf.write(tmp_path / "sentence.wav", audio, SR)
    rec = asr(WHISPER_BASE).extract([AudioItem("s", "", load_audio(tmp_path / "sentence.wav").samples,
                                               transcript=sentence)]).records[0]
    assert rec.per_utterance["language"] == "en"
    assert normalize_for_wer(rec.per_utterance["text"]) == normalize_for_wer(sentence)
    assert rec.per_utterance["word_errors"] == 0
    # the first word starts after the second of silence, the last ends within the speech
    assert 40 <= rec.frames["start_frame"][0] <= 75 and rec.frames["end_frame"][-1] <= rec.per_utterance["n_frames"]
    assert rec.frames["confidence"].mean() > 0.5


def test_backend_choices_are_checked_and_a_missing_package_is_named(whisper, tmp_path, monkeypatch):
    import sys

    from sercache.extract.options import ExtractError, ExtractOptions
    from sercache.features.models import ModelError
    from sercache.synthetic.models import make_ctc

    with pytest.raises(ExtractError, match="--asr-backend onnx: must be one of transformers, faster-whisper"):
        ExtractOptions("r", "emodb", "o", asr_backend="onnx")
    with pytest.raises(ModelError, match="--asr-backend faster-whisper decodes Whisper models"):
        build_extractor("asr", ASRConfig(model=str(make_ctc(tmp_path / "ctc")), backend="faster-whisper"), Runtime())
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as where it is not installed
    with pytest.raises(ModelError, match=r"needs the faster-whisper package: pip install 'sercache\[faster-whisper\]'"):
        build_extractor("asr", ASRConfig(model=str(whisper), backend="faster-whisper"), Runtime())


def test_faster_whisper_backend(tmp_path, monkeypatch):
    """The optional CTranslate2 backend on a tiny Whisper with faster-whisper's fixed 30 s window (English-only:
    ctranslate2 takes a vocabulary smaller than a real multilingual one's for an English-only model)."""
    pytest.importorskip("faster_whisper")
    from sercache.features.rebuild import extractor_for
    from sercache.features.whisper_ct2 import FasterWhisperASRExtractor

    monkeypatch.delenv("SERCACHE_CT2_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # nothing may land there
    model = make_whisper_asr(tmp_path / "tiny-30s", window_seconds=30, max_tokens=448, multilingual=False)
    store = tmp_path / "cache" / ".models"  # what extract passes: inside the output cache
    ext = build_extractor("asr", ASRConfig(model=str(model), backend="faster-whisper"), Runtime("cpu", model_store=store))
    assert isinstance(ext, FasterWhisperASRExtractor) and ext.identity()["backend"] == "faster-whisper"
    items = [AudioItem(f"u{i}", "", wave(s, seed=i), transcript="the cat") for i, s in enumerate((0.4, 1.1, 2.5))]
    # conversions left half-made: by a killed process of this host (removed), a live one and another host's (kept)
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    stale, live, elsewhere = (ext.converted().with_name(f"{ext.converted().name}.partial-{owner}") for owner in
                              (f"{host}-{gone.pid}", f"{host}-1", f"another-host-{gone.pid}"))
    for partial in (stale, live, elsewhere):
        (partial / "model.bin").parent.mkdir(parents=True)
        (partial / "model.bin").write_bytes(b"half")
    records = ext.extract(items).records
    assert not stale.exists() and live.exists() and elsewhere.exists()
    for it, rec in zip(items, records):
        # (its transcripts are compared with the transformers backend's on real speech: benchmarks/whisper_asr.py;
        # a random model emits timestamp tokens that faster-whisper's own loop would re-decode from)
        text = rec.per_utterance["text"]
        assert rec.per_utterance["language"] == "en" and text != ""
        assert rec.per_utterance["n_frames"] == -(-len(it.samples) // 320)
        frames = rec.frames
        assert "".join(frames["token"]).strip() == text
        assert ((frames["confidence"] >= 0) & (frames["confidence"] <= 1)).all()
        start, end = frames["start_frame"], frames["end_frame"]
        assert (np.diff(start) >= 0).all() and (end >= start).all() and end.max() <= rec.per_utterance["n_frames"]
    converted = sorted(p.parent for p in (store / "ctranslate2").glob("*/model.bin"))
    assert converted == sorted([ext.converted(), live, elsewhere])  # converted once, there (beside the kept two)
    rebuilt = extractor_for("asr", ext.provenance())  # predict's path: no output cache to keep a conversion in
    assert isinstance(rebuilt, FasterWhisperASRExtractor) and rebuilt.identity() == ext.identity()
    again = rebuilt.extract(items[:1]).records[0]
    assert again.per_utterance["text"] == records[0].per_utterance["text"]
    scratch = rebuilt.scratch
    assert scratch is not None and (rebuilt.converted() / "model.bin").exists()
    rebuilt.close()
    assert not scratch.exists() and not (tmp_path / "home").exists()
    monkeypatch.setenv("SERCACHE_CT2_CACHE", str(tmp_path / "ct2"))  # the user's own place wins
    named = extractor_for("asr", ext.provenance())
    assert named.converted().parent == tmp_path / "ct2" and named.scratch is None
