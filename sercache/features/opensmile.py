"""eGeMAPS and ComParE features through audEERING's ``opensmile`` package (imported lazily).

Each utterance gets the feature set's low-level descriptors (LLDs, 10 ms frames) as frames
``layer_0`` and its functionals (one vector per utterance) as the per-utterance field
``functionals``, plus mean/std of the LLD frames like the spectral streams. The column names
(LLD and functional names) are the stream attribute ``column_names``, read back as
``cache.streams[name].column_names["layer_0" | "functionals"]``.

Frame count (measured on opensmile 2.6.0, which bundles openSMILE 3.0.1; identical for
eGeMAPSv02 and ComParE_2016, and independent of the content): audio of ``n >= 960`` samples
at 16 kHz yields ``(n - 960) // 160 + 2`` LLD frames, i.e. one per full 60 ms window (the F0
window, the longest of both sets) at a 10 ms hop, plus one. Shorter audio yields no frame at
all, and the wrapper then returns one row of NaN (LLDs and functionals alike).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sercache.features.base import AudioItem, BackendError, BatchPolicy, Extractor, ExtractResult
from sercache.features.streams.base import ExtractError
from sercache.store.records import ExtractionProblem, UtteranceFeatures

SAMPLE_RATE = 16_000
HOP = 160            # 10 ms
MIN_SAMPLES = 960    # 60 ms: the longest analysis window; less audio gives no LLD frame
#: Stream kind -> ``opensmile.FeatureSet`` member name.
OPENSMILE_KINDS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}


def opensmile_frames(n_samples: int) -> int:
    """LLD frames stored for ``n_samples`` of audio (short audio is zero-padded to MIN_SAMPLES)."""
    return (max(n_samples, MIN_SAMPLES) - MIN_SAMPLES) // HOP + 2


class OpenSmileExtractor(Extractor):
    """``egemaps`` (eGeMAPSv02: 25 LLDs, 88 functionals) or ``compare`` (ComParE_2016: 65 LLDs,
    6373 functionals), stored float32.

    Robustness rule: audio shorter than MIN_SAMPLES (60 ms) is zero-padded at the end to
    MIN_SAMPLES before both passes, and stored with a warning problem, so every stored
    utterance has at least 2 LLD frames and finite values; ``n_samples`` stays the real
    length (``cache verify`` applies the same padding in its frame rule). Any value openSMILE
    still returns as NaN/inf is replaced with 0, again with a warning naming the fields.
    Silent (all-zero) audio needs nothing special: openSMILE returns finite values for it
    (the runner already records a warning that the audio is silent).

    Args:
        kind: ``"egemaps"`` or ``"compare"``.

    Raises:
        ExtractError: the ``opensmile`` package is missing or its library does not load
            (raised at construction, before any extraction work).
    """

    input = "audio"
    layers = [0]
    pooled_layers = [0]
    frame_rate = SAMPLE_RATE / HOP

    def __init__(self, kind: str) -> None:
        if kind not in OPENSMILE_KINDS:
            raise ExtractError(f"opensmile kind {kind!r}: use one of {', '.join(OPENSMILE_KINDS)}")
        self.kind = kind
        self.feature_set = OPENSMILE_KINDS[kind]
        self._opensmile = _import_opensmile(kind)
        fs = getattr(self._opensmile.FeatureSet, self.feature_set)
        levels = self._opensmile.FeatureLevel
        # One Smile per level (the wrapper computes one level per object); built once, reused per utterance.
        self._lld = self._opensmile.Smile(feature_set=fs, feature_level=levels.LowLevelDescriptors)
        self._func = self._opensmile.Smile(feature_set=fs, feature_level=levels.Functionals)
        self.lld_names = [str(n) for n in self._lld.feature_names]
        self.functional_names = [str(n) for n in self._func.feature_names]

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "feature_set": self.feature_set,
                "feature_levels": ["LowLevelDescriptors", "Functionals"], "sample_rate": SAMPLE_RATE,
                "dtype": "float32", "min_samples": MIN_SAMPLES, "short_audio": "zero-padded at the end"}

    def details(self) -> dict[str, Any]:
        from sercache import __version__
        # The wrapper does not expose the bundled openSMILE binary's version; its own version pins it.
        return {"sercache": __version__, "numpy": np.__version__, "opensmile": self._opensmile.__version__}

    def stream_attrs(self) -> dict[str, Any]:
        return dict(super().stream_attrs(),
                    frame_rule={"kind": "window", "window": MIN_SAMPLES, "hop": HOP, "extra": 1},
                    column_names={"layer_0": self.lld_names, "functionals": self.functional_names},
                    finite_fields=["functionals"])

    def batch_policy(self) -> BatchPolicy:
        # openSMILE processes one signal per call, so a batch is only a loop; no padding happens.
        return BatchPolicy(budget_seconds=0.0, pad_safe=True, max_items=8)

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        result = ExtractResult()
        for it in items:
            samples = np.asarray(it.samples, dtype=np.float32)
            notes = []
            if len(samples) < MIN_SAMPLES:
                notes.append(f"zero-padded from {len(samples)} to {MIN_SAMPLES} samples ({len(samples) / SAMPLE_RATE:.3f} s "
                             f"is shorter than openSMILE's {MIN_SAMPLES * 1000 // SAMPLE_RATE} ms window)")
                samples = np.pad(samples, (0, MIN_SAMPLES - len(samples)))
            lld = self._lld.process_signal(samples, SAMPLE_RATE).to_numpy(dtype=np.float32)
            func = self._func.process_signal(samples, SAMPLE_RATE).to_numpy(dtype=np.float32).reshape(-1)
            if lld.shape != (opensmile_frames(len(it.samples)), len(self.lld_names)):
                raise BackendError(f"openSMILE {self._opensmile.__version__} returned LLDs of shape {lld.shape} for "
                                   f"{len(it.samples)} samples, not ({opensmile_frames(len(it.samples))}, "
                                   f"{len(self.lld_names)}): its framing differs from the one sercache was measured "
                                   "on (opensmile 2.6.0); install that version: pip install 'opensmile==2.6.0'")
            if func.shape != (len(self.functional_names),):
                raise BackendError(f"openSMILE returned {func.shape} functionals; expected "
                                   f"({len(self.functional_names)},)")
            lld, lld_bad = _finite(lld, self.lld_names)
            func, func_bad = _finite(func[None], self.functional_names)
            if lld_bad or func_bad:
                bad = lld_bad + func_bad
                notes.append(f"{len(bad)} openSMILE features were NaN/inf and are stored as 0 "
                             f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})")
            stats = lld.astype(np.float64)
            result.records.append(UtteranceFeatures(it.utt_id, {"layer_0": lld}, {
                "functionals": func[0],
                "pooled_mean": stats.mean(0, keepdims=True).astype(np.float32),
                "pooled_std": stats.std(0, keepdims=True).astype(np.float32),
                "n_samples": np.int64(len(it.samples))}))
            result.problems += [ExtractionProblem(it.utt_id, it.path, self.kind, n, severity="warning") for n in notes]
        return result

    def close(self) -> None:
        self._lld = self._func = None


def _finite(values: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """``values`` (rows, len(names)) with NaN/inf set to 0, and the names of the columns that held any."""
    ok = np.isfinite(values)
    if ok.all():
        return values, []
    return np.where(ok, values, np.float32(0)), [names[j] for j in np.flatnonzero(~ok.all(axis=0))]


def _import_opensmile(kind: str) -> Any:
    try:
        import opensmile
    except ImportError as exc:
        raise ExtractError(f"--streams {kind} needs the opensmile package: pip install 'sercache[opensmile]' "
                           f"({exc})") from None
    except OSError as exc:  # the wheel's bundled libSMILEapi could not be loaded on this platform
        raise ExtractError(f"--streams {kind}: the opensmile package is installed but its openSMILE library "
                           f"does not load ({exc}); reinstall it with pip install --force-reinstall opensmile") from None
    return opensmile
