"""Load frozen encoders through ``from_pretrained`` only, and check them before any work starts.

Every loader takes a Hugging Face model id or a local folder. ``trust_remote_code`` stays
off: a model folder from a colleague can never run code on this machine. Checks happen
on the config (cheap, no weights), so a wrong model is refused in a second, not after an
hour of extraction.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sercache.errors import SercacheError

log = logging.getLogger(__name__)

#: Audio encoders with a wav2vec2-style convolutional front end on raw 16 kHz samples.
AUDIO_ENCODER_TYPES = ("hubert", "wav2vec2", "wavlm", "data2vec-audio", "wav2vec2-conformer",
                       "unispeech", "unispeech-sat", "sew", "sew-d")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class ModelError(SercacheError, ValueError):
    """A model that cannot serve the role it was given (named in the message)."""


@contextlib.contextmanager
def model_bars(shown: bool) -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") shown or hidden for a block.

    A caller that asked for no progress (``progress=False``) gets none from transformers either; the
    setting is restored after, so a notebook's later ``from_pretrained`` calls show their bars again.
    """
    if shown:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_shown:
            hf_logging.enable_progress_bar()


def _config(name: str, role: str) -> Any:
    from transformers import AutoConfig

    ensure_available(name, role)
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        offline = "" if Path(name).exists() else (
            " If this machine is offline, download the model elsewhere and give its local folder, or set "
            "HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache.")
        reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the {role} model {name!r}: {reason}.{offline}") from None


def ensure_available(name: str, role: str) -> None:
    """Fail at once, with one message, for a hub id that can be neither read locally nor downloaded.

    Without this, an offline machine spends half a minute in the hub client's retries (with a warning
    each) before the same conclusion.
    """
    if Path(name).expanduser().exists():
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub client rejects: let from_pretrained word the error
        return
    if isinstance(cached, str):
        return
    fix = (f"Download it where there is internet (`huggingface-cli download {name}`) and copy the Hugging Face "
           "cache here, or give the model's local folder")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelError(f"{role} {name!r} is neither a local folder nor in the local Hugging Face cache, and "
                         f"HF_HUB_OFFLINE is set. {fix}.")
    if not _hub_reachable():
        raise ModelError(f"{role} {name!r} is neither a local folder nor in the local Hugging Face cache, and the "
                         f"hub cannot be reached from this machine. {fix}.")


@functools.lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def check_audio_encoder(name: str, role: str = "--ssl-model") -> Any:
    """Return the config of a raw-waveform speech encoder, or raise ModelError."""
    config = _config(name, role)
    if config.model_type not in AUDIO_ENCODER_TYPES or not hasattr(config, "conv_stride"):
        raise ModelError(
            f"{role} {name!r} is a {config.model_type!r} model, not a speech encoder on raw audio; "
            f"give a HuBERT, wav2vec2, WavLM or data2vec-audio model (supported types: {', '.join(AUDIO_ENCODER_TYPES)})")
    return config


ASR_MODEL_HINT = "a fine-tuned CTC model such as facebook/wav2vec2-large-960h, or a Whisper model such as openai/whisper-large-v3"


def check_ctc_model(name: str) -> Any:
    config = _config(name, "--asr-model")
    if config.model_type not in AUDIO_ENCODER_TYPES or not hasattr(config, "conv_stride"):
        raise ModelError(f"--asr-model {name!r} is a {config.model_type!r} model, neither CTC nor Whisper; give "
                         f"{ASR_MODEL_HINT}")
    architectures = config.architectures or []
    if not any(a.endswith("ForCTC") for a in architectures):
        raise ModelError(
            f"--asr-model {name!r} has no CTC head (its checkpoint architectures are {architectures or 'unset'}); "
            f"give {ASR_MODEL_HINT}")
    return config


def check_asr_model(name: str, language: str = "detect") -> Any:
    """The config of a CTC or Whisper ASR model, with ``--asr-language`` checked against it (no weights read)."""
    config = _config(name, "--asr-model")
    if config.model_type == "whisper":
        whisper_language(name, language)
        return config
    if language != "detect":
        raise ModelError(f"--asr-language {language!r} applies to Whisper models; --asr-model {name!r} is a "
                         f"{config.model_type!r} model, whose transcripts have no language setting. Leave it out.")
    return check_ctc_model(name)


def whisper_language(name: str, language: str = "detect") -> str:
    """``--asr-language`` as the language code the Whisper model ``name`` knows (``de``), or ``"detect"``.

    Accepts a code (``de``), a token (``<|de|>``) or an English name (``german``); an English-only
    model transcribes English only.
    """
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    try:
        generation = GenerationConfig.from_pretrained(name)
    except OSError:
        generation = None
    known = sorted(t[2:-2] for t in getattr(generation, "lang_to_id", None) or {})
    if language in ("detect", "", None):
        return "detect"
    wanted = str(language).strip().lower()
    code = TO_LANGUAGE_CODE.get(wanted, wanted.removeprefix("<|").removesuffix("|>"))
    if not known and generation is not None and getattr(generation, "is_multilingual", True) is False:
        known = ["en"]  # an English-only model (whisper-*.en)
    if code in known:
        return code
    which = f"it knows {', '.join(known)}" if known else "its generation config names no languages"
    raise ModelError(f"--asr-language {language!r}: the Whisper model {name!r} has no such language ({which}). "
                     "Give one of its codes, e.g. de or en, or leave --asr-language out to detect the language of "
                     "each utterance.")


def check_text_encoder(name: str) -> Any:
    config = _config(name, "--text-model")
    if hasattr(config, "conv_stride") or getattr(config, "is_encoder_decoder", False) or not hasattr(config, "vocab_size"):
        raise ModelError(f"--text-model {name!r} is a {config.model_type!r} model, not a text encoder; give a "
                         "BERT-style encoder such as bert-base-uncased or roberta-base")
    return config


def model_reference(name: str) -> str:
    """What provenance records for a model: a local folder as an absolute path (a relative one would
    mean another folder, or nothing, when the cache is opened from elsewhere); a hub id as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def resolve_layers(spec: str | list[int] | None, n_layers: int, name: str, option: str = "--layers") -> list[int]:
    """Parse ``--layers`` (or ``option``, e.g. ``--text-layers``): ``None`` (last), ``"all"``, ``"24"``, ``"6,12,24"``, ``"-1"``.

    Hidden state 0 is the input to the first transformer layer, so a model with N layers
    has hidden states 0..N.
    """
    if spec is None or spec == "" or spec == "last":
        return [n_layers]
    if spec == "all":
        return list(range(n_layers + 1))
    items = spec if isinstance(spec, list) else [s for s in re.split(r"[,\s]+", str(spec)) if s]
    layers = []
    for item in items:
        try:
            k = int(item)
        except ValueError:
            raise ModelError(f"{option} {spec!r}: {item!r} is not a layer number; use e.g. 24, 6,12,24 or all") from None
        if k < 0:
            k += n_layers + 1
        if not 0 <= k <= n_layers:
            raise ModelError(f"{option} {spec!r}: layer {item} is beyond {name!r}, which has {n_layers} transformer "
                             f"layers (hidden states 0-{n_layers})")
        if k not in layers:
            layers.append(k)
    return sorted(layers)


def weights_fingerprint(name: str) -> str:
    """A content fingerprint of the weights: the SHA-256 of the weight files.

    In the Hugging Face cache, weight files are blobs named by their SHA-256, so a hub model
    costs no hashing; local folders are hashed once per process.
    """
    from transformers.utils import cached_file

    digests = []
    for fname in WEIGHT_FILES:
        try:
            path = cached_file(name, fname, _raise_exceptions_for_missing_entries=False)
        except (OSError, ValueError):
            path = None
        if not path:
            continue
        real = os.path.realpath(path)
        blob = os.path.basename(real)
        digests.append(blob if re.fullmatch(r"[0-9a-f]{64}", blob) else _sha256(real))
    return "sha256:" + ",".join(digests) if digests else "unknown"


_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def audio_normalization(name: str) -> bool:
    """Whether the model expects zero-mean unit-variance input (its feature extractor's ``do_normalize``)."""
    from transformers import AutoFeatureExtractor

    try:
        fe = AutoFeatureExtractor.from_pretrained(name, trust_remote_code=False)
        return bool(getattr(fe, "do_normalize", False))
    except (OSError, ValueError):
        log.warning("%s has no feature-extractor config; assuming do_normalize=True (the wav2vec2 default)", name)
        return True


def load_audio_encoder(name: str, *, ctc: bool = False) -> Any:
    """The model's weights (an eval-mode torch module on the CPU)."""
    from transformers import AutoModel, AutoModelForCTC

    return _timed_load(AutoModelForCTC if ctc else AutoModel, name)


def _timed_load(cls: Any, name: str) -> Any:
    """``cls.from_pretrained(name)`` in eval mode, logged with its size and time (``sercache -v``)."""
    start = time.monotonic()
    model = cls.from_pretrained(name, trust_remote_code=False).eval()
    params = sum(p.numel() for p in model.parameters())
    log.info("loaded %s (%s, %s parameters) in %.1f s", name, type(model).__name__, f"{params:,}",
             time.monotonic() - start)
    return model


def ctc_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"--asr-model {name!r} has no usable CTC tokenizer (vocab.json): {exc}") from None
    if getattr(tok, "word_delimiter_token", None) is None:
        raise ModelError(f"--asr-model {name!r}: tokenizer {type(tok).__name__} is not a CTC character tokenizer")
    return tok


def text_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"--text-model {name!r}: cannot load its tokenizer: {exc}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"--text-model {name!r}: needs a fast (Rust) tokenizer for token-to-word offsets")
    return tok


def load_text_encoder(name: str) -> Any:
    from transformers import AutoModel

    return _timed_load(AutoModel, name)


def is_uncased(tokenizer: Any) -> bool:
    """True when the tokenizer lower-cases its input (bert-base-uncased, all-MiniLM-L6-v2...).

    Asks the tokenizer's own normalizer, so it is right whatever the vocabulary holds.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is not None:
        return normalizer.normalize_str("AbC") == "abc"
    return bool(getattr(tokenizer, "do_lower_case", False))
