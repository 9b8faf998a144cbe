"""Whisper transcripts for the ``asr`` stream: transformers ``generate``, greedy, batched.

Stored like the CTC transcripts (features/asr.py), so ``text_asr``, the WER report and
``predict`` read either. Per token: ``token`` (its text; a leading space starts a word, and
tokens that are only part of a UTF-8 character are merged with the next), ``confidence`` (the
probability ``generate`` chose it with, after Whisper's logit processors), ``start_frame`` /
``end_frame`` on the 50 frames/s grid of the encoder (the CTC stream's grid). Per utterance:
``text``, word errors against the gold transcript, ``n_frames`` (grid length, ``ceil(n / 320)``)
and ``language`` (the one given, or the one Whisper detects).

How:
- Audio up to the model's window (30 s) is decoded in batches: one encoder pass, language
  detection on its output where no language is given, then one greedy ``generate`` call with
  the task always ``transcribe`` and no timestamp tokens. Longer audio goes alone through
  transformers' long-form decoding (sequential 30 s windows, each ending on a predicted
  timestamp), so nothing is truncated.
- Timestamps: dynamic time warping of the cross-attention of the model's alignment heads
  (transformers' own ``_extract_token_timestamps``, what ``return_token_timestamps`` runs), on
  the attention ``generate`` computed (short audio) or a decoder pass per window (long audio);
  only the decoder runs with eager attention, the one that returns weights. A token spans from
  its own row's time to the next token's, the last one to the end of the audio. The DTW starts
  at the last prompt token, not (as transformers does) at the first text token, which would
  otherwise always land on 0.0 s however much silence comes before it (tests/test_whisper_asr.py
  checks this on real weights). Each clip is aligned on its own rows, so batching changes nothing.
  A model without alignment heads gets segment timestamps: every token spans its segment (short
  audio: the whole clip).
"""
from __future__ import annotations

import codecs
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from sercache.features.asr import WER_NORMALIZATION, Decoded, transcript_record
from sercache.features.base import AudioItem, BackendError, BatchPolicy, Extractor, ExtractResult
from sercache.features.models import ModelError, model_reference, weights_fingerprint, whisper_language
from sercache.features.streams.base import ExtractError
from sercache.store.frames import hop_frames

SAMPLE_RATE = 16_000
FRAME_HOP = 320          # samples per encoder frame (mel hop 160 x conv stride 2): the 50 frames/s grid
MEL_RATE = 100           # mel frames per second
#: utterances per batch when --batch-seconds is not given (see benchmarks/whisper_asr.py for the CPU figures)
CPU_BATCH, GPU_BATCH = 8, 32
#: one decoded text token: (token id, probability it was chosen with, start s, end s)
Token = tuple[int, float, float, float]
#: what transformers' own Whisper ``generate`` logs about the calls it makes itself, whatever its caller passes:
#: flags it checks before it sets ``return_dict_in_generate``, its own mix of a config and arguments, a mask for
#: the decoder prompts, which here are all the same length (nothing padded), and (long audio) that segments are
#: returned, which they are asked for. Dropped so a user does not read "unexpected behavior" over transcripts
#: that equal transformers' own (tests/test_whisper_asr.py).
GENERATE_NOISE = ("The following generation flags are not valid and may be ignored",
                  "Passing `generation_config` together with generation-related arguments",
                  "The attention mask is not set with a batched input",
                  "You have passed `return_dict_in_generate=True` and `return_timestamps=True`")
GENERATE_LOGGERS = ("transformers.generation.utils", "transformers.generation.configuration_utils",
                    "transformers.models.whisper.generation_whisper")


class _DropGenerateNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(GENERATE_NOISE)


@contextlib.contextmanager
def quiet_generate() -> Iterator[None]:
    """transformers' generation loggers without :data:`GENERATE_NOISE`, for the duration of a ``generate`` call."""
    loggers = [logging.getLogger(name) for name in GENERATE_LOGGERS]
    noise = _DropGenerateNoise()
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


class WhisperTranscriber(Extractor):
    """What the Whisper ASR backends share: the ``asr`` kind, stored on the 50 frames/s grid."""

    kind = "asr"
    input = "audio"
    frame_rate = SAMPLE_RATE / FRAME_HOP

    def details(self) -> dict[str, Any]:
        return dict(super().details(), wer_normalization=WER_NORMALIZATION)

    def stream_attrs(self) -> dict[str, Any]:
        return dict(super().stream_attrs(), frame_rule={"kind": "hop", "hop": FRAME_HOP})


class WhisperASRExtractor(WhisperTranscriber):
    """Greedy Whisper transcripts with per-token confidence and timestamps, and WER against the gold text."""

    def __init__(self, model: str, *, language: str = "detect", device: str = "cpu", precision: str = "fp32",
                 batch_seconds: float | None = None) -> None:
        from transformers import AutoTokenizer, GenerationConfig, WhisperFeatureExtractor

        from sercache.features.encoder import PRECISIONS
        from sercache.features.models import _config

        self.model_name = model = model_reference(model)
        self.config = _config(model, "--asr-model")
        self.language = whisper_language(model, language)
        if precision not in PRECISIONS:
            raise ExtractError(f"--precision {precision!r}: use one of {sorted(PRECISIONS)}")
        self.device, self.precision, self.torch_dtype = device, precision, PRECISIONS[precision]
        try:
            self.fe = WhisperFeatureExtractor.from_pretrained(model)
            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"--asr-model {model!r}: cannot load its feature extractor and tokenizer: {exc}") from None
        try:
            self.generation = GenerationConfig.from_pretrained(model)
        except OSError:
            self.generation = GenerationConfig.from_model_config(self.config)
        self.lang_of_id = {i: t[2:-2] for t, i in (getattr(self.generation, "lang_to_id", None) or {}).items()}
        self.multilingual = bool(self.lang_of_id)
        self.alignment_heads = getattr(self.generation, "alignment_heads", None)
        no_timestamps = getattr(self.generation, "no_timestamps_token_id", None)
        self.timestamp_begin = no_timestamps + 1 if no_timestamps is not None else int(self.config.vocab_size)
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.window = int(self.fe.n_samples)
        # --batch-seconds counts padded audio, and every clip is padded to the window: N windows, N clips
        window_seconds = self.window / SAMPLE_RATE
        self.batch_items = (max(1, int(batch_seconds // window_seconds)) if batch_seconds is not None
                            else GPU_BATCH if str(device).startswith("cuda") else CPU_BATCH)
        self.fingerprint = weights_fingerprint(model)
        self.model: Any = None
        self.suppress: SuppressMask | None = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_name, "weights": self.fingerprint, "model_type": "whisper",
                "decoder": "whisper-generate", "backend": "transformers", "search": "greedy", "task": "transcribe",
                "units": "tokens", "language": self.language if self.multilingual else "en",
                "timestamps": "alignment-heads" if self.alignment_heads else "segments",
                "precision": self.precision, "sample_rate": SAMPLE_RATE, "window_samples": self.window,
                "n_mels": int(self.fe.feature_size)}

    def details(self) -> dict[str, Any]:
        return dict(super().details(), device=str(self.device), batch_items=self.batch_items,
                    confidence="softmax of generate's scores (after Whisper's logit processors) at the chosen token",
                    long_audio="transformers long-form generation: sequential windows, each ending on a timestamp")

    def batch_policy(self) -> BatchPolicy:
        # every clip is padded to the window, so any lengths may share a batch; longer ones go alone
        return BatchPolicy(budget_seconds=0.0, pad_safe=True, max_items=self.batch_items,
                           chunk_seconds=self.window / SAMPLE_RATE)

    def load(self) -> None:
        if self.model is None:
            from transformers import WhisperForConditionalGeneration

            model = WhisperForConditionalGeneration.from_pretrained(
                self.model_name, dtype=self.torch_dtype, trust_remote_code=False).eval().to(self.device)
            # the same suppression, as a mask built once: transformers' own runs torch.isin over the whole
            # vocabulary at every step, which took 0.5 s a step on a busy 2-core CPU (8 ms single-threaded)
            suppressed, model.generation_config.suppress_tokens = model.generation_config.suppress_tokens, None
            self.suppress = SuppressMask(suppressed or [], int(model.config.vocab_size), self.device)
            self.model = model

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        self.load()
        result = ExtractResult()
        short = [it for it in items if len(it.samples) <= self.window]
        with torch.inference_mode():
            decoded = dict(zip((it.utt_id for it in short), self._decode_short([it.samples for it in short])))
            for it in items:
                n_frames = hop_frames(len(it.samples), FRAME_HOP)
                tokens, language = decoded[it.utt_id] if it.utt_id in decoded else self._decode_long(it.samples)
                result.records.append(transcript_record(it, self._decoded(tokens, n_frames), n_frames,
                                                        language=language))
        return result

    # ----------------------------------------------------------------------------- decoding

    def _mel(self, waves: list[np.ndarray], whole: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(batch, mels, frames)`` padded to the window (``whole``: to the longest, untruncated)."""
        pad = dict(padding="longest", truncation=False) if whole else {}
        out = self.fe(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True, **pad)
        return out.input_features.to(self.device, self.torch_dtype), out.attention_mask.sum(-1)

    def _encode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.model.encoder(mel).last_hidden_state

    def _languages(self, encoded: torch.Tensor) -> list[str]:
        if not self.multilingual:
            return ["en"] * len(encoded)
        if self.language != "detect":
            return [self.language] * len(encoded)
        from transformers.modeling_outputs import BaseModelOutput

        ids = self.model.detect_language(encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                                         generation_config=self.model.generation_config)
        return [self.lang_of_id[int(i)] for i in ids]

    def _generate_kwargs(self, languages: list[str]) -> dict[str, Any]:
        from transformers import LogitsProcessorList

        task = dict(language=languages, task="transcribe") if self.multilingual else {}
        return dict(task, do_sample=False, num_beams=1, logits_processor=LogitsProcessorList([self.suppress]))

    def _decode_short(self, waves: list[np.ndarray]) -> list[tuple[list[Token], str]]:
        """Clips within the window, batched: per clip, its text tokens and language."""
        if not waves:
            return []
        from transformers.modeling_outputs import BaseModelOutput

        mel, mel_frames = self._mel(waves)
        encoded = self._encode(mel)
        languages = self._languages(encoded)
        with self._eager_attention(), quiet_generate():  # the encoder has run: only the decoder's attention is eager
            # one decoding of the window (transformers would re-decode from a stray timestamp token)
            out = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                                      force_unique_generate_call=True, return_dict_in_generate=True, output_scores=True,
                                      output_attentions=bool(self.alignment_heads), **self._generate_kwargs(languages))
        prefix = out.sequences.shape[1] - len(out.scores)
        chosen = torch.stack(out.scores, 1).float().softmax(-1).gather(-1, out.sequences[:, prefix:, None])[..., 0]
        cross = ([torch.cat([step[layer] for step in out.cross_attentions], dim=2)
                  for layer in range(len(out.cross_attentions[0]))] if self.alignment_heads else [])
        decoded = []
        for i, sequence in enumerate(out.sequences):
            sequence = self._until_end(sequence, prefix)
            rows = [layer[i: i + 1, :, : len(sequence) - 1] for layer in cross]  # this clip's rows, no padding
            positions = list(range(prefix, len(sequence)))
            whole_clip = [(0.0, len(waves[i]) / SAMPLE_RATE)] * len(positions)
            decoded.append((self._tokens(sequence, prefix, chosen[i].cpu().numpy(), rows, int(mel_frames[i]),
                                         positions, whole_clip, 0.0), languages[i]))
        return decoded

    def _decode_long(self, wave: np.ndarray) -> tuple[list[Token], str]:
        """Audio beyond the window: transformers' long-form decoding, then each window's tokens aligned."""
        mel, mel_frames = self._mel([wave], whole=True)
        window = int(self.fe.nb_max_frames)
        language = self._languages(self._encode(self._window(mel, 0, window)))
        seeks: list[int] = []  # the mel frame each decoding window starts at, in order
        with quiet_generate():
            out = self.model.generate(mel, return_timestamps=True, return_segments=True, return_dict_in_generate=True,
                                      output_scores=True, temperature=0.0, condition_on_prev_tokens=False,
                                      monitor_progress=lambda p: seeks.append(int(p[0, 0])),
                                      **self._generate_kwargs(language))
        windows = list(_by_window(out["segments"][0]))
        if len(windows) != len(seeks):
            raise BackendError(f"long-form decoding made {len(windows)} windows but reported {len(seeks)} positions")
        tokens = []
        for seek, segments in zip(seeks, windows):
            result = segments[0]["result"]
            sequence, prefix = result["sequences"].to(self.device), segments[0]["idxs"][0]
            chosen = torch.stack(result["scores"]).float().softmax(-1).gather(-1, sequence[prefix:, None].cpu())[:, 0]
            rows = self._cross_attention(self._window(mel, seek, window), sequence) if self.alignment_heads else []
            positions = [p for s in segments for p in range(*s["idxs"])]
            spans = [(float(s["start"]), float(s["end"])) for s in segments for _ in range(*s["idxs"])]
            tokens += self._tokens(sequence, prefix, chosen.numpy(), rows, min(window, int(mel_frames[0]) - seek),
                                   positions, spans, seek / MEL_RATE)
        return tokens, language[0]

    def _cross_attention(self, mel: torch.Tensor, sequence: torch.Tensor) -> list[torch.Tensor]:
        """Per decoder layer, ``(1, heads, tokens - 1, frames)``: the cross-attention ``generate`` saw, recomputed
        for one long-form window (keeping them from ``generate`` would keep every window's encoder attention too)."""
        encoded = self._encode(mel)
        with self._eager_attention():
            out = self.model(encoder_outputs=(encoded,), decoder_input_ids=sequence[None, :-1], output_attentions=True)
        return list(out.cross_attentions)

    def _window(self, mel: torch.Tensor, seek: int, frames: int) -> torch.Tensor:
        part = mel[..., seek: seek + frames]
        return torch.nn.functional.pad(part, (0, frames - part.shape[-1]))

    def _until_end(self, sequence: torch.Tensor, prefix: int) -> torch.Tensor:
        """Up to and including the first end-of-text after the prompt (batch padding repeats it)."""
        ends = (sequence[prefix:] == self.generation.eos_token_id).nonzero()
        return sequence[: prefix + int(ends[0]) + 1] if len(ends) else sequence

    def _tokens(self, sequence: torch.Tensor, prefix: int, chosen: np.ndarray, cross: list[torch.Tensor],
                mel_frames: int, positions: list[int], segments: list[tuple[float, float]],
                offset: float) -> list[Token]:
        """Text tokens at ``positions`` of one window's ``sequence``: ``(id, probability, start s, end s)``.

        Args:
            sequence: the window's tokens, prompt (``prefix`` of them) included.
            chosen: per generated token (position ``prefix`` on), the probability it was chosen with.
            cross: per decoder layer, the cross-attention of positions ``0 .. len(sequence) - 2`` (none: no
                alignment heads).
            mel_frames: real (unpadded) mel frames in the window.
            segments: per position, its segment's ``(start, end)`` in the audio, in seconds.
            offset: the window's start in the audio, in seconds.
        """
        kept = [(p, span) for p, span in zip(positions, segments) if self._is_text(int(sequence[p]))]
        if not kept or not cross:
            return [(int(sequence[p]), float(chosen[p - prefix]), *span) for p, span in kept]
        from transformers.generation import GenerateEncoderDecoderOutput

        steps = GenerateEncoderDecoderOutput(sequences=sequence[None], cross_attentions=(tuple(cross),))
        # transformers' DTW (return_token_timestamps's), started one row early: see the module docstring
        times = self.model._extract_token_timestamps(  # noqa: SLF001
            steps, self.alignment_heads, num_frames=mel_frames, num_input_ids=prefix - 1)[0].cpu().double().numpy()
        times[-1] = mel_frames / MEL_RATE  # the last row's span runs to the end of the alignment (the audio's)
        times = np.append(times, times[-1]) + offset
        return [(int(sequence[p]), float(chosen[p - prefix]), times[p], times[p + 1]) for p, _ in kept]

    @contextlib.contextmanager
    def _eager_attention(self) -> Iterator[None]:
        """Attention weights come only from the eager implementation: switched on for the decoder passes
        whose cross-attention the timestamps need (the encoder keeps the faster one)."""
        before = self.model.config._attn_implementation
        switch = bool(self.alignment_heads) and before != "eager"
        if switch:
            self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            if switch:
                self.model.set_attn_implementation(before)

    def _is_text(self, token: int) -> bool:
        return token < self.timestamp_begin and token not in self.special_ids

    def _decoded(self, tokens: list[Token], n_frames: int) -> Decoded:
        """Tokens as stored: pieces of whole UTF-8 characters, times on the 50 frames/s grid within the clip."""
        text = self.tokenizer.decode([t[0] for t in tokens], skip_special_tokens=True).strip()
        return as_stored(text, utf8_pieces(tokens, self.tokenizer), n_frames)


class SuppressMask:
    """A logits processor: the generation config's ``suppress_tokens`` never chosen (a fixed mask)."""

    def __init__(self, tokens: list[int], vocab_size: int, device: str) -> None:
        self.mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.mask[list(tokens)] = True

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(self.mask[: scores.shape[-1]], float("-inf"))


def utf8_pieces(tokens: list[Token], tokenizer: Any) -> list[tuple[str, float, float, float]]:
    """``(text, probability, start, end)`` per piece of whole UTF-8 characters.

    Whisper's byte-level tokens can end inside a character (German umlauts, most non-Latin
    scripts); such a token is merged with the ones that complete it (probability: their product).
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}  # byte-level BPE: a character per byte
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces, run = [], []
    for k, token in enumerate(tokens):
        run.append(token)
        piece = utf8.decode(bytes(byte_of[c] for c in tokenizer.convert_ids_to_tokens(token[0])),
                            final=k == len(tokens) - 1)
        if piece:
            pieces.append((piece, float(np.prod([t[1] for t in run])), run[0][2], run[-1][3]))
            run = []
    return pieces


def as_stored(text: str, pieces: list[tuple[str, float, float, float]], n_frames: int) -> Decoded:
    """The ``asr`` stream's per-token arrays, times (s) put on the 50 frames/s grid within the clip."""
    seconds = np.array([[p[2], p[3]] for p in pieces], np.float64).reshape(-1, 2)
    spans = np.clip(np.round(seconds * SAMPLE_RATE / FRAME_HOP), 0, n_frames).astype(np.int32)
    return Decoded(text, [p[0] for p in pieces], np.array([p[1] for p in pieces], np.float32), spans[:, 0], spans[:, 1])


def _by_window(segments: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Long-form segments grouped by the decoding window that produced them (one ``result`` each)."""
    group: list[dict[str, Any]] = []
    for segment in segments:
        if group and segment["result"] is not group[0]["result"]:
            yield group
            group = []
        group.append(segment)
    if group:
        yield group
