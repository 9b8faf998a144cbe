"""Whisper transcripts through faster-whisper (CTranslate2): ``--asr-backend faster-whisper[-int8]``.

An optional backend of the ``asr`` stream (``pip install 'sercache[faster-whisper]'``), faster on a
CPU than transformers' ``generate`` (benchmarks/whisper_asr.py). ``--asr-model`` stays the
transformers folder or hub id: its weights are converted once with ctranslate2's own converter,
into a folder named by the model and its weights' fingerprint (so the recorded identity still names
the model the user gave) under ``$SERCACHE_CT2_CACHE`` when set, else under the output cache's
``.models/ctranslate2`` (extract: reused by every shard and rerun), else into a temporary folder
removed when the extractor closes (``predict``): nothing is written outside a folder the user named.

Clips within the 30 s window are decoded in batches the way the transformers backend decodes
them: one encoder pass, language detection on it where no language is given, greedy ``generate``
(task transcribe, no timestamp tokens), then ctranslate2's ``align`` for each token's probability
and its span from the alignment heads' DTW, a token spanning from its own row's time to the next
token's (as in features/whisper_asr.py). What differs: faster-whisper's front end pads the log-mel
with zeros after normalising where transformers pads the audio, so transcripts can differ
(../shared/models/README.md); ``confidence`` is the token's probability in the aligning pass (no
logit processors); ``int8`` quantises the weights when loading. Longer audio goes through
faster-whisper's own long-form ``transcribe`` (timestamp tokens on, word timestamps), and is
stored word by word (``token`` = a word with its leading space).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sercache.features.asr import transcript_record
from sercache.features.base import AudioItem, BatchPolicy, ExtractResult
from sercache.features.models import ModelError, model_reference, weights_fingerprint, whisper_language
from sercache.features.whisper_asr import Token, WhisperTranscriber, as_stored, utf8_pieces
from sercache.store.frames import hop_frames

#: one stored unit: (text, probability, start s, end s)
Piece = tuple[str, float, float, float]

SAMPLE_RATE, FRAME_HOP = 16_000, 320
#: CTranslate2 compute types: by --precision, and for the int8 backend by device
COMPUTE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
INT8 = {"cpu": "int8", "cuda": "int8_float16"}


def ct2_cache(model_store: Path | None) -> Path | None:
    """Where converted models are kept: ``$SERCACHE_CT2_CACHE``, else ``MODEL_STORE/ctranslate2`` (None: nowhere)."""
    if os.environ.get("SERCACHE_CT2_CACHE"):
        return Path(os.environ["SERCACHE_CT2_CACHE"]).expanduser()
    return model_store / "ctranslate2" if model_store is not None else None


#: a conversion in progress: ``<folder>.partial-<host>-<pid>``, renamed to ``<folder>`` when complete
PARTIAL = ".partial-"


def remove_stale_conversions(folder: Path) -> list[Path]:
    """Remove the half-made conversions into ``folder`` of processes of this host that are gone (a conversion
    killed before its rename: hundreds of MB, never used). Another host's, or a live process's, are left alone."""
    removed = []
    prefix = f"{socket.gethostname()}-"
    for partial in folder.parent.glob(f"{folder.name}{PARTIAL}*"):
        owner = partial.name[len(folder.name) + len(PARTIAL):]
        pid = owner[len(prefix):] if owner.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class FasterWhisperASRExtractor(WhisperTranscriber):
    """Greedy Whisper transcripts from CTranslate2, stored token by token like the transformers backend's."""

    def __init__(self, model: str, *, backend: str = "faster-whisper", language: str = "detect", device: str = "cpu",
                 precision: str = "fp32", model_store: Path | None = None) -> None:
        try:
            import faster_whisper  # noqa: F401
        except ImportError:
            raise ModelError(f"--asr-backend {backend} needs the faster-whisper package: pip install "
                             "'sercache[faster-whisper]' (or use --asr-backend transformers)") from None
        from sercache.features.models import _config

        self.model_name = model = model_reference(model)
        self.config = _config(model, "--asr-model")
        self.language = whisper_language(model, language)
        self.backend, self.device, self.precision = backend, str(device), precision
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        self.compute_type = INT8[kind] if backend.endswith("int8") else COMPUTE[precision]
        from transformers import AutoTokenizer, GenerationConfig

        generation = GenerationConfig.from_pretrained(model)
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        self.lang_to_id = getattr(generation, "lang_to_id", None) or {}
        self.task_id = (getattr(generation, "task_to_id", None) or {}).get("transcribe")
        self.sot, self.no_timestamps = generation.decoder_start_token_id, generation.no_timestamps_token_id
        self.timestamp_begin, self.special_ids = self.no_timestamps + 1, set(self.tokenizer.all_special_ids)
        self.window = 30 * SAMPLE_RATE  # faster-whisper's, whatever the model's
        self.fingerprint = weights_fingerprint(model)
        self.store = ct2_cache(model_store)
        self.scratch: Path | None = None  # a temporary conversion, removed on close
        self.model: Any = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_name, "weights": self.fingerprint, "model_type": "whisper",
                "decoder": "whisper-ctranslate2", "backend": self.backend, "compute_type": self.compute_type,
                "search": "greedy", "task": "transcribe", "language": self.language if self.lang_to_id else "en",
                "units": "tokens", "timestamps": "alignment-heads", "precision": self.precision, "sample_rate": SAMPLE_RATE}

    def details(self) -> dict[str, Any]:
        import ctranslate2
        import faster_whisper

        return dict(super().details(), device=self.device, ctranslate2=ctranslate2.__version__,
                    faster_whisper=faster_whisper.__version__,
                    converted=str(self.converted()) if self.store is not None else "a temporary folder",
                    confidence="the token's probability in ctranslate2's aligning pass",
                    long_audio="faster-whisper transcribe (timestamp tokens, word timestamps): stored by word")

    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(budget_seconds=0.0, pad_safe=True, max_items=8, chunk_seconds=self.window / SAMPLE_RATE)

    def converted(self) -> Path:
        """The CTranslate2 folder for these weights (named by model and weights, so a changed model converts anew)."""
        root = self.store if self.store is not None else self._scratch()
        return root / hashlib.sha256(f"{self.model_name}\n{self.fingerprint}".encode()).hexdigest()[:24]

    def _scratch(self) -> Path:
        """This extractor's temporary conversion folder (made on first use, removed by :meth:`close`)."""
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="sercache-ct2-"))
        return self.scratch

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from faster_whisper import WhisperModel

        folder = self.converted()
        if not (folder / "model.bin").exists():  # converted once, beside and then renamed: shards may race
            from ctranslate2.converters import TransformersConverter

            folder.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_conversions(folder)
            partial = folder.with_name(f"{folder.name}{PARTIAL}{socket.gethostname()}-{os.getpid()}")
            try:
                TransformersConverter(self.model_name, copy_files=["tokenizer.json", "preprocessor_config.json"]
                                      ).convert(str(partial), force=True)
                try:
                    partial.rename(folder)
                except OSError:  # another process finished first
                    pass
            finally:  # renamed, or a failed or interrupted conversion: nothing half-made stays
                shutil.rmtree(partial, ignore_errors=True)
        device, _, index = self.device.partition(":")
        self.model = WhisperModel(str(folder), device=device, device_index=int(index or 0),
                                  compute_type=self.compute_type, cpu_threads=torch.get_num_threads())

    def close(self) -> None:
        self.model = None
        if self.scratch is not None:  # a temporary conversion (no store): ours alone, so removed
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        self.load()
        result = ExtractResult()
        short = [it for it in items if len(it.samples) <= self.window]
        decoded = dict(zip((it.utt_id for it in short), self._decode_short([it.samples for it in short])))
        for it in items:
            n_frames = hop_frames(len(it.samples), FRAME_HOP)
            if it.utt_id in decoded:
                tokens, language = decoded[it.utt_id]
                text = self.tokenizer.decode([t[0] for t in tokens], skip_special_tokens=True).strip()
                pieces = utf8_pieces(tokens, self.tokenizer)
            else:
                pieces, text, language = self._decode_long(it.samples)
            result.records.append(transcript_record(it, as_stored(text, pieces, n_frames), n_frames,
                                                    language=language))
        return result

    def _decode_short(self, waves: list[np.ndarray]) -> list[tuple[list[Token], str]]:
        """Clips within the window, batched: per clip, its text tokens ``(id, probability, start s, end s)``."""
        if not waves:
            return []
        from faster_whisper.audio import pad_or_trim

        fe = self.model.feature_extractor
        mels = [fe(w)[:, :-1] for w in waves]  # the content frames (faster-whisper adds one frame of padding)
        features = np.stack([pad_or_trim(m) for m in mels])
        encoded = self._encode(features)
        if not self.lang_to_id or self.language != "detect":
            languages = [self.language if self.lang_to_id else "en"] * len(waves)
        else:
            languages = [best[0][0][2:-2] for best in self.model.model.detect_language(encoded)]
        prompts = [self._prompt(language) for language in languages]
        results = self.model.model.generate(encoded, prompts, beam_size=1)
        tokens = [[t for t in r.sequences_ids[0] if t < self.timestamp_begin and t not in self.special_ids]
                  for r in results]
        out: list[list[Token]] = [[] for _ in waves]
        for language in sorted(set(languages)):  # ctranslate2 aligns a batch under one prompt
            group = [i for i, lang in enumerate(languages) if lang == language and tokens[i]]
            if not group:
                continue
            aligned = self.model.model.align(encoded if len(group) == len(waves) else self._encode(features[group]),
                                             prompts[group[0]][:-1], [tokens[i] for i in group],
                                             [mels[i].shape[-1] for i in group])
            for i, alignment in zip(group, aligned):
                out[i] = self._timed(tokens[i], alignment, mels[i].shape[-1])
        return list(zip(out, languages))

    def _encode(self, features: np.ndarray) -> Any:
        import ctranslate2

        return self.model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)))

    def _timed(self, tokens: list[int], alignment: Any, mel_frames: int) -> list[Token]:
        """Each token's probability and span from ctranslate2's alignment. Its DTW rows are OpenAI's: the
        no-timestamps token's, then each text token's, so a token's own row is the one after it."""
        rows = np.array([a[0] for a in alignment.alignments])
        times = np.array([a[1] for a in alignment.alignments])[np.diff(rows, prepend=-1) > 0] / self.frame_rate
        times = np.append(times, mel_frames / 100)  # the last row runs to the end of the audio
        probability = alignment.text_token_probs
        return [(t, float(probability[k]), float(times[k + 1]), float(times[min(k + 2, len(times) - 1)]))
                for k, t in enumerate(tokens)]

    def _decode_long(self, wave: np.ndarray) -> tuple[list[Piece], str, str]:
        segments, info = self.model.transcribe(
            wave, language=None if self.language == "detect" else self.language, task="transcribe", beam_size=1,
            best_of=1, temperature=0.0, condition_on_previous_text=False, word_timestamps=True, vad_filter=False,
            no_speech_threshold=None)
        segments = list(segments)
        words = [(w.word, w.probability, w.start, w.end) for s in segments for w in (s.words or [])]
        return words, "".join(s.text for s in segments).strip(), info.language

    def _prompt(self, language: str) -> list[int]:
        task = [self.lang_to_id[f"<|{language}|>"], self.task_id] if self.lang_to_id else []
        return [self.sot, *task, self.no_timestamps]
