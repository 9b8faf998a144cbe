"""Synthetic corpora in real on-disk layouts, with audio that carries an emotion signal.

The audio is a voiced, speech-like signal (harmonics of a jittered pitch contour, shaped
by two formant-like resonances and a syllable-rate envelope). Pitch, energy, speaking rate
and brightness depend on the emotion, and pitch also on the speaker, so a model has a real
(if easy) signal to learn and a speaker effect to generalise over.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from sercache._typing import Pathlike


@dataclass(frozen=True)
class VoiceStyle:
    """How an emotion sounds in the synthetic voice (the cues emotional speech is known for)."""

    pitch: float        # mean F0 in Hz for a male voice (a female voice is about 1.6x higher)
    energy: float       # peak amplitude
    rate: float         # syllables per second
    harmonics: int      # brightness: how many harmonics are voiced
    movement: float     # pitch movement (relative depth of the intonation contour)
    harshness: float    # breathy/harsh noise mixed into the voiced parts


#: Emotion -> voice. Loudness is normalised away by most encoders, so the classes also differ in
#: brightness, harshness, rhythm and intonation, which survive that normalisation.
EMOTION_STYLE = {
    "neu": VoiceStyle(115.0, 0.20, 4.0, 8, 0.04, 0.00),
    "hap": VoiceStyle(190.0, 0.45, 5.5, 16, 0.22, 0.02),
    "exc": VoiceStyle(200.0, 0.50, 6.0, 18, 0.25, 0.03),
    "sad": VoiceStyle(95.0, 0.10, 2.5, 4, 0.02, 0.01),
    "ang": VoiceStyle(160.0, 0.75, 6.5, 30, 0.10, 0.20),
    "fru": VoiceStyle(140.0, 0.50, 5.0, 20, 0.08, 0.10),
}
VOTE_NAMES = {"neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
              "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other"}
VAD = {"neu": (3.0, 2.5, 2.5), "hap": (4.0, 3.5, 3.0), "exc": (4.0, 4.0, 3.5), "sad": (2.0, 2.0, 2.0),
       "ang": (1.5, 4.0, 4.0), "fru": (2.0, 3.5, 3.0)}
PHRASES = {
    "neu": ["i think it is fine", "ok what time is it", "we can go home now", "that is right", "let me look"],
    "hap": ["oh that is great", "i love it so much", "thank you so much", "yes this is good", "really good day"],
    "exc": ["oh that is great", "yes yes we did it", "i can't believe it", "this is so good", "wow really"],
    "sad": ["i miss him so much", "it is not fine", "i am sorry", "never again i think", "i don't know why"],
    "ang": ["don't tell me that", "why did you do that", "i hate this", "get out now", "no no that is bad"],
    "fru": ["i told you so", "this is not right", "why is it always me", "just go", "what do you want"],
}


@dataclass
class SynthUtterance:
    utt_id: str
    label: str            # IEMOCAP consensus code
    duration_s: float
    transcript: str = ""
    votes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dialog(self) -> str:
        return self.utt_id.rsplit("_", 1)[0]

    @property
    def session(self) -> int:
        """IEMOCAP session from the id (1 for ids that do not follow IEMOCAP's rules)."""
        return int(self.utt_id[3:5]) if self.utt_id[3:5].isdigit() else 1

    @property
    def speaker_gender(self) -> str:
        last = self.utt_id.rsplit("_", 1)[-1]
        return last[0] if last[:1] in ("F", "M") else "F"


def speechlike(label: str, duration_s: float, *, speaker_pitch: float = 1.0, sample_rate: int = 16_000,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """A voiced, speech-like waveform whose pitch, loudness, rhythm, brightness, intonation and
    harshness follow ``label`` (see :data:`EMOTION_STYLE`)."""
    rng = rng or np.random.default_rng(0)
    style = EMOTION_STYLE.get(label, EMOTION_STYLE["neu"])
    n = max(1, int(round(duration_s * sample_rate)))
    t = np.arange(n) / sample_rate
    f0 = style.pitch * speaker_pitch
    contour = f0 * (1 + style.movement * np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6))
                    + 0.01 * rng.standard_normal(n).cumsum() / np.sqrt(n))
    phase = 2 * np.pi * np.cumsum(contour) / sample_rate
    formants = (600 * speaker_pitch ** 0.3, 1700 * speaker_pitch ** 0.3)
    wave = np.zeros(n)
    for k in range(1, style.harmonics + 1):
        freq = k * f0
        if freq > 0.45 * sample_rate:
            break
        gain = sum(np.exp(-((freq - f) / 250.0) ** 2) for f in formants) + 0.2
        wave += gain / k ** 0.7 * np.sin(k * phase)
    wave /= np.abs(wave).max() + 1e-9
    envelope = np.clip(np.sin(np.pi * style.rate * t + rng.uniform(0, np.pi)), 0, None) ** 0.6
    wave = (wave + style.harshness * 3 * rng.standard_normal(n)) * envelope
    wave = wave / (np.abs(wave).max() + 1e-9) * style.energy
    wave += 0.003 * rng.standard_normal(n)  # breath noise, so silence is never exact
    return np.clip(wave, -1, 1).astype(np.float32)


#: Utterances per consensus code in the real IEMOCAP release, for the codes of the standard
#: 4-class set (exc is merged into happy there: 1636 happy, 5531 in all).
IEMOCAP4_CODE_COUNTS = {"neu": 1708, "hap": 595, "exc": 1041, "sad": 1084, "ang": 1103}


def proportional_counts(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """``total`` split in proportion to ``weights`` (largest remainder, so the counts sum to ``total``)."""
    raw = {k: total * w / sum(weights.values()) for k, w in weights.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[:total - sum(out.values())]:
        out[k] += 1
    return out


def iemocap_like(n_per_speaker_label: int = 6, labels: Iterable[str] = ("neu", "hap", "sad", "ang"),
                 sessions: Iterable[int] = (1, 2, 3, 4, 5), durations: tuple[float, float] = (1.0, 3.0),
                 seed: int = 0, *, label_counts: Mapping[str, int] | None = None) -> list[SynthUtterance]:
    """An IEMOCAP-shaped utterance list: 2 speakers per session, ids following IEMOCAP's rules.

    Args:
        n_per_speaker_label: utterances per session, lead speaker and label (balanced classes).
        labels: consensus codes; one dialog per session, lead speaker and label.
        label_counts: total utterances per code over the corpus instead (overrides ``labels`` and
            ``n_per_speaker_label``), e.g. ``proportional_counts(IEMOCAP4_CODE_COUNTS, 200)`` for
            IEMOCAP's class imbalance. Each code is spread as evenly as possible over the sessions
            and lead speakers, so every LOSO test fold holds every class.
    """
    rng = np.random.default_rng(seed)
    sessions = list(sessions)
    labels = list(label_counts) if label_counts is not None else list(labels)
    groups = 2 * len(sessions)
    shift = {}  # where each code's leftover utterances start, so they land on different groups
    for label in labels:
        shift[label] = sum(label_counts[lab] % groups for lab in shift) % groups if label_counts is not None else 0
    out = []
    for si, s in enumerate(sessions):
        for gi, lead in enumerate(("F", "M")):
            counter = {"F": 0, "M": 0}
            for li, label in enumerate(labels):
                kind = "impro" if li % 2 == 0 else "script"
                dialog = f"Ses{s:02d}{lead}_{kind}0{li + 1}" + ("_1" if kind == "script" else "")
                n = n_per_speaker_label
                if label_counts is not None:
                    base, extra = divmod(label_counts[label], groups)
                    n = base + int((2 * si + gi - shift[label]) % groups < extra)
                for k in range(n):
                    spk = "F" if k % 2 == 0 else "M"
                    uid = f"{dialog}_{spk}{counter[spk]:03d}"
                    counter[spk] += 1
                    phrase = PHRASES.get(label, PHRASES["neu"])[rng.integers(0, 5)]
                    out.append(SynthUtterance(uid, label, float(rng.uniform(*durations)), phrase))
    return out


def from_jsonl_rows(rows: Iterable[dict], *, max_duration: float | None = None, scale: float = 1.0) -> list[SynthUtterance]:
    """Utterances with IEMOCAP's real ids, labels and (optionally scaled/capped) durations."""
    out = []
    for r in rows:
        d = float(r["duration_s"]) * scale
        if max_duration is not None:
            d = min(d, max_duration)
        out.append(SynthUtterance(r["utt_id"], r["emotion"], d, ""))
    return out


def _votes_for(u: SynthUtterance) -> dict[str, list[str]]:
    if u.votes:
        return u.votes
    name = VOTE_NAMES.get(u.label, "Neutral")
    return {"C-E1": [name], "C-E2": [name], "C-E3": [name, "Neutral"] if u.label != "neu" else [name]}


def write_iemocap_tree(root: Pathlike, utterances: list[SynthUtterance], *, sample_rate: int = 16_000,
                       audio: Callable[[SynthUtterance, np.random.Generator], np.ndarray] | None = None,
                       seed: int = 0) -> Path:
    """Write ``SessionN/dialog/{EmoEvaluation,transcriptions}/*.txt`` and ``SessionN/sentences/wav/...``.

    The text files follow the release format exactly (tab-separated headers, evaluator
    vote lines, ``A-E`` attribute lines, blank-line separated blocks).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    speaker_pitch = {}
    by_dialog: dict[str, list[SynthUtterance]] = {}
    for u in utterances:
        by_dialog.setdefault(u.dialog, []).append(u)
    for dialog, utts in sorted(by_dialog.items()):
        session = utts[0].session
        sdir = root / f"Session{session}"
        (sdir / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (sdir / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
        wav_dir = sdir / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        evals = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        lines = []
        clock = 2.0
        for u in utts:
            start, end = clock, clock + u.duration_s
            clock = end + 0.5
            v, a, d = VAD.get(u.label, (3.0, 3.0, 3.0))
            evals.append(f"[{start:.4f} - {end:.4f}]\t{u.utt_id}\t{u.label}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
            for ev, cats in _votes_for(u).items():
                evals.append(f"{ev}:\t" + "".join(f"{c}; " for c in cats).rstrip() + "\t()")
            evals.append(f"A-E1:\tval {int(v)}; act {int(a)}; dom  {int(d)};\t()")
            evals.append("")
            lines.append(f"{u.utt_id} [{start:08.4f}-{end:08.4f}]: {u.transcript}")
            spk = (session, u.speaker_gender)
            if spk not in speaker_pitch:
                speaker_pitch[spk] = (1.6 if u.speaker_gender == "F" else 1.0) * rng.uniform(0.9, 1.1)
            wave = (audio(u, rng) if audio else
                    speechlike(u.label, u.duration_s, speaker_pitch=speaker_pitch[spk], sample_rate=sample_rate, rng=rng))
            sf.write(wav_dir / f"{u.utt_id}.wav", wave, sample_rate, subtype="PCM_16")
        (sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(evals) + "\n")
        (sdir / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_csv_corpus(root: Pathlike, utterances: list[SynthUtterance], *, sample_rate: int = 16_000,
                     seed: int = 0) -> Path:
    """The same utterances as a generic CSV manifest (``manifest.csv`` + ``wav/``)."""
    import pandas as pd

    root = Path(root)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for u in utterances:
        sf.write(root / "wav" / f"{u.utt_id}.wav", speechlike(u.label, u.duration_s, sample_rate=sample_rate, rng=rng),
                 sample_rate, subtype="PCM_16")
        rows.append({"utt_id": u.utt_id, "path": f"wav/{u.utt_id}.wav", "label": u.label,
                     "speaker": u.utt_id[:5] + u.speaker_gender, "session": str(u.session), "transcript": u.transcript,
                     "votes": json.dumps(_votes_for(u))})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root
