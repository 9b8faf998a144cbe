"""Corpus readers: IEMOCAP release layout, RAVDESS / EmoDB / CREMA-D file names, generic CSV.

Every test writes its own small corpus into ``tmp_path`` by hand (no sercache.synthetic,
never ../shared), then checks exact parsed values and the recorded problems.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sercache.corpora.base import MANIFEST_COLUMNS
from sercache.corpora.iemocap import parse_transcriptions, parse_utt_id, parse_votes, read_iemocap
from sercache.extract.manifests import CORPORA, read_corpus
from sercache.store.records import ExtractionProblem

SR = 16_000


# ----------------------------------------------------------------------------- helpers


def write_wav(path: Path, num_samples: int, rate: int = SR, channels: int = 1, seed: int = 0) -> Path:
    """A short PCM16 noise file (deterministic per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = rng.integers(-3000, 3000, size=(num_samples, channels), dtype=np.int16)
    sf.write(str(path), data if channels > 1 else data[:, 0], rate, subtype="PCM_16")
    return path


def sha1_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def row_of(table, utt_id: str) -> dict:
    rows = table[table.utt_id == utt_id]
    assert len(rows) == 1, f"{utt_id}: {len(rows)} rows"
    return rows.iloc[0].to_dict()


def block(start: str, end: str, uid: str, code: str, vad: str, *lines: str) -> str:
    return "\n".join([f"[{start} - {end}]\t{uid}\t{code}\t[{vad}]", *lines])


EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def eval_text(*blocks: str) -> str:
    return EVAL_HEADER + "\n\n".join(blocks) + "\n"


# The standard release written by make_iemocap: utterance id -> number of samples (16 kHz).
IEMOCAP_WAVS = {
    "Ses01F_impro01_F000": 4000,      # 0.25 s
    "Ses01F_impro01_M000": 8000,      # 0.5 s, male speaker in a female-led dialog
    "Ses01F_impro01_F001": 2400,      # 0.15 s, 'xxx' (no agreement)
    "Ses01F_script01_2_M011": 3200,   # 0.2 s, scripted
    "Ses02M_impro03_F000": 1600,
    "Ses02M_impro03_M001": 2000,
}

S1_IMPRO01_EVAL = eval_text(
    block("6.2901", "8.2357", "Ses01F_impro01_F000", "neu", "2.5000, 2.5000, 2.5000",
          "C-E2:\tNeutral;\t()",
          "C-E3:\tNeutral;\t()",
          "C-F1:\tNeutral;\t(curious)",
          "A-E3:\tval 3; act 2; dom  2;\t()",
          "A-F1:\tval 3; act 2; dom  3;\t()"),
    block("10.0100", "11.3925", "Ses01F_impro01_M000", "fru", "2.0000, 3.5000, 4.0000",
          "C-E1:\tFrustration; Anger;\t()",
          "C-E2:\tOther:curious;\t(puzzled)",
          "C-M1:\tFrustration;\t()",
          "A-E1:\tval 2; act 4; dom  4;\t()"),
    block("14.8872", "18.0175", "Ses01F_impro01_F001", "xxx", "2.5000, 3.0000, 3.0000",
          "C-E1:\tSadness;\t()",
          "C-E2:\tNeutral;\t()",
          "C-E3:\tFrustration;\t()",
          "A-E1:\tval 2; act 3; dom  3;\t()"),
)
S1_IMPRO01_TRANS = (
    "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
    "Ses01F_impro01_M000 [010.0100-011.3925]: Do you have your forms?\n"
    "M: [BREATHING]\n"
    "Ses01F_impro01_MXX0 [011.5000-012.0000]: Yeah.\n"
    "Ses01F_impro01_F001 [014.8872-018.0175]: Yeah.   \n"
)
S1_SCRIPT_EVAL = eval_text(
    block("3.1000", "5.6000", "Ses01F_script01_2_M011", "ang", "1.5000, 4.0000, 4.5000",
          "C-E1:\tAnger;\t()",
          "C-E2:\tAnger; Frustration;\t()",
          "A-E1:\tval 1; act 4; dom  5;\t()"),
)
S1_SCRIPT_TRANS = "Ses01F_script01_2_M011 [003.1000-005.6000]: What did you say to me?\n"
S2_EVAL = eval_text(
    block("1.0000", "2.5000", "Ses02M_impro03_F000", "hap", "4.0000, 3.0000, 2.5000",
          "C-E1:\tHappiness; Excited;\t()"),
    block("3.0000", "4.2500", "Ses02M_impro03_M001", "exc", "4.5000, 4.0000, 3.0000",
          "C-E1:\tExcited;\t()",
          "C-E4:\tHappiness;\t()"),
)
S2_TRANS = (
    "Ses02M_impro03_F000 [001.0000-002.5000]: I got in!\n"
    "Ses02M_impro03_M001 [003.0000-004.2500]: That's amazing.\n"
)


def iemocap_wav(root: Path, uid: str) -> Path:
    session = int(uid[3:5])
    return root / f"Session{session}" / "sentences" / "wav" / uid.rsplit("_", 1)[0] / f"{uid}.wav"


def write_dialog(root: Path, session: int, dialog: str, evaluation: str | bytes, transcript: str | bytes | None) -> None:
    d = root / f"Session{session}" / "dialog"
    for sub, content in (("EmoEvaluation", evaluation), ("transcriptions", transcript)):
        if content is None:
            continue
        f = d / sub / f"{dialog}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def make_iemocap(tmp_path: Path) -> Path:
    """Two sessions, three dialogs, six utterances, plus the files a real release holds that must be ignored."""
    root = tmp_path / "IEMOCAP_full_release"
    write_dialog(root, 1, "Ses01F_impro01", S1_IMPRO01_EVAL, S1_IMPRO01_TRANS)
    write_dialog(root, 1, "Ses01F_script01_2", S1_SCRIPT_EVAL, S1_SCRIPT_TRANS)
    write_dialog(root, 2, "Ses02M_impro03", S2_EVAL, S2_TRANS)
    # Subfolders of EmoEvaluation hold per-evaluator files: never read as labels.
    cat = root / "Session1" / "dialog" / "EmoEvaluation" / "Categorical" / "Ses01F_impro01_e2_cat.txt"
    cat.parent.mkdir(parents=True)
    cat.write_text(eval_text(block("0.0000", "1.0000", "Ses01F_impro01_F099", "ang", "1.0, 1.0, 1.0")) +
                   "Ses01F_impro01_F000 :Neutral; ()\n")
    attr = root / "Session1" / "dialog" / "EmoEvaluation" / "Attribute" / "Ses01F_impro01_atr.txt"
    attr.parent.mkdir(parents=True)
    attr.write_text("Ses01F_impro01_F000 :act 2; val 3; dom  2; ()\n")
    # The whole-dialog stereo wav is not an utterance.
    write_wav(root / "Session1" / "dialog" / "wav" / "Ses01F_impro01.wav", 800, channels=2)
    for i, (uid, n) in enumerate(IEMOCAP_WAVS.items()):
        write_wav(iemocap_wav(root, uid), n, seed=i)
    return root


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing needle."""
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)


# ----------------------------------------------------------------------------- IEMOCAP


def test_iemocap_reads_every_utterance_with_manifest_columns(tmp_path):
    root = make_iemocap(tmp_path)
    m = read_corpus("iemocap", root)
    assert list(m.table.columns) == list(MANIFEST_COLUMNS)
    assert m.table.utt_id.tolist() == sorted(IEMOCAP_WAVS)  # sorted; Categorical/ F099 not read
    assert len(m.table) == 6
    assert m.problems == []
    assert m.table.corpus.tolist() == ["iemocap"] * 6
    assert m.table.session.tolist() == ["1", "1", "1", "1", "2", "2"]
    assert m.table.label.tolist() == ["neu", "xxx", "fru", "ang", "hap", "exc"]
    assert m.table.dialog_type.tolist() == ["impro", "impro", "impro", "script", "impro", "impro"]
    assert m.table.speaker.tolist() == ["Ses01F", "Ses01F", "Ses01M", "Ses01M", "Ses02F", "Ses02M"]
    assert m.table.gender.tolist() == ["F", "F", "M", "M", "F", "M"]
    assert m.table.fold.tolist() == [""] * 6
    for uid, n in IEMOCAP_WAVS.items():
        r = row_of(m.table, uid)
        assert r["num_samples"] == n and r["duration_s"] == n / SR
        assert r["audio_sha1"] == sha1_of(iemocap_wav(root, uid))


def test_iemocap_exact_row_female_speaker(tmp_path):
    root = make_iemocap(tmp_path)
    table = read_corpus("iemocap", root).table
    r = row_of(table, "Ses01F_impro01_F000")
    wav = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    votes = json.loads(r.pop("votes"))
    assert votes == {"C-E2": ["Neutral"], "C-E3": ["Neutral"], "C-F1": ["Neutral"]}  # A-… lines are not votes
    assert r == {
        "utt_id": "Ses01F_impro01_F000", "corpus": "iemocap", "path": str(wav), "speaker": "Ses01F",
        "session": "1", "gender": "F", "label": "neu", "valence": 2.5, "arousal": 2.5, "dominance": 2.5,
        "transcript": "Excuse me.", "dialog_type": "impro", "start_s": 6.2901, "end_s": 8.2357, "fold": "",
        "duration_s": 0.25, "num_samples": 4000.0, "sample_rate": 16000.0, "channels": 1.0,
        "audio_sha1": hashlib.sha1(wav.read_bytes()).hexdigest(),
    }


def test_iemocap_exact_row_male_speaker_in_female_led_dialog(tmp_path):
    root = make_iemocap(tmp_path)
    table = read_corpus("iemocap", root).table
    r = row_of(table, "Ses01F_impro01_M000")
    wav = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M000.wav"
    votes = json.loads(r.pop("votes"))
    # Several categories on one line; 'Other:curious' -> 'Other'; the comment in () is dropped.
    assert votes == {"C-E1": ["Frustration", "Anger"], "C-E2": ["Other"], "C-M1": ["Frustration"]}
    assert r == {
        "utt_id": "Ses01F_impro01_M000", "corpus": "iemocap", "path": str(wav), "speaker": "Ses01M",
        "session": "1", "gender": "M", "label": "fru", "valence": 2.0, "arousal": 3.5, "dominance": 4.0,
        "transcript": "Do you have your forms?", "dialog_type": "impro", "start_s": 10.01, "end_s": 11.3925,
        "fold": "", "duration_s": 0.5, "num_samples": 8000.0, "sample_rate": 16000.0, "channels": 1.0,
        "audio_sha1": sha1_of(wav),
    }


def test_iemocap_exact_row_scripted_and_xxx(tmp_path):
    root = make_iemocap(tmp_path)
    table = read_corpus("iemocap", root).table
    r = row_of(table, "Ses01F_script01_2_M011")
    assert r["path"] == str(root / "Session1/sentences/wav/Ses01F_script01_2/Ses01F_script01_2_M011.wav")
    assert (r["dialog_type"], r["speaker"], r["gender"], r["session"], r["label"]) == ("script", "Ses01M", "M", "1", "ang")
    assert (r["valence"], r["arousal"], r["dominance"], r["start_s"], r["end_s"]) == (1.5, 4.0, 4.5, 3.1, 5.6)
    assert r["transcript"] == "What did you say to me?"
    assert json.loads(r["votes"]) == {"C-E1": ["Anger"], "C-E2": ["Anger", "Frustration"]}
    assert r["duration_s"] == 0.2
    x = row_of(table, "Ses01F_impro01_F001")
    assert x["label"] == "xxx"
    assert x["transcript"] == "Yeah."  # trailing spaces stripped
    assert json.loads(x["votes"]) == {"C-E1": ["Sadness"], "C-E2": ["Neutral"], "C-E3": ["Frustration"]}
    s2 = row_of(table, "Ses02M_impro03_F000")
    assert (s2["speaker"], s2["gender"], s2["session"], s2["transcript"]) == ("Ses02F", "F", "2", "I got in!")
    assert json.loads(s2["votes"]) == {"C-E1": ["Happiness", "Excited"]}


def test_iemocap_without_probe_leaves_audio_columns_empty(tmp_path):
    root = make_iemocap(tmp_path)
    m = read_corpus("iemocap", root, probe=False)
    assert len(m.table) == 6 and m.problems == []
    for c in ("duration_s", "num_samples", "sample_rate", "channels"):
        assert m.table[c].isna().all(), c
    assert m.table.audio_sha1.tolist() == [""] * 6


def test_iemocap_sessions_filter(tmp_path):
    root = make_iemocap(tmp_path)
    one = read_corpus("iemocap", root, ["1"], probe=False).table
    assert one.utt_id.tolist() == ["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000",
                                   "Ses01F_script01_2_M011"]
    two = read_corpus("iemocap", root, ["2"], probe=False).table
    assert two.utt_id.tolist() == ["Ses02M_impro03_F000", "Ses02M_impro03_M001"]
    assert read_corpus("iemocap", root, ["02"], probe=False).table.utt_id.tolist() == two.utt_id.tolist()
    assert len(read_corpus("iemocap", root, ["1", "2"], probe=False).table) == 6
    assert len(read_corpus("iemocap", root, None, probe=False).table) == 6
    with pytest.raises(FileNotFoundError, match="Session3"):
        read_corpus("iemocap", root, ["3"], probe=False)


def test_iemocap_root_without_sessions_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Session"):
        read_iemocap(tmp_path)


def test_iemocap_transcriptions_skip_lines_that_are_not_utterances(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(S1_IMPRO01_TRANS + "F: [LAUGHTER]\nSes01F_impro01_FXX1 [020.0000-021.0000]: Hm.\n")
    problems: list[ExtractionProblem] = []
    assert parse_transcriptions(f, problems) == {
        "Ses01F_impro01_F000": "Excuse me.",
        "Ses01F_impro01_M000": "Do you have your forms?",
        "Ses01F_impro01_F001": "Yeah.",
    }
    assert problems == []


def test_iemocap_parse_utt_id_and_votes():
    assert parse_utt_id("Ses01F_impro01_M000") == {
        "session": "1", "speaker": "Ses01M", "gender": "M", "dialog_type": "impro", "dialog": "Ses01F_impro01"}
    assert parse_utt_id("Ses05M_script01_2_F011") == {
        "session": "5", "speaker": "Ses05F", "gender": "F", "dialog_type": "script", "dialog": "Ses05M_script01_2"}
    assert parse_utt_id("Ses03M_impro05a_F000")["dialog"] == "Ses03M_impro05a"
    for bad in ("Ses01F_impro01_MXX0", "Ses01F_impro01", "foo", "Ses1F_impro01_F000"):
        with pytest.raises(ValueError):
            parse_utt_id(bad)
    assert parse_votes("Frustration; Anger;") == ["Frustration", "Anger"]
    assert parse_votes("Neutral; Other:curious;") == ["Neutral", "Other"]
    assert parse_votes("") == []


# ----------------------------------------------------------------------------- IEMOCAP problems


@pytest.mark.parametrize("bad", [
    "[20.0000 - 21.0000]\tSes01F_impro01_F002\tneu\t[2.5000, 2.5000]",            # dominance missing
    "20.0000 - 21.0000]\tSes01F_impro01_F002\tneu\t[2.5000, 2.5000, 2.5000]",     # leading '[' lost
    "[20.0000 - 21.0000]\tSes01F_impro01_F002\t[2.5000, 2.5000, 2.5000]",          # no emotion code
    "[20.0000 21.0000]\tSes01F_impro01_F002\tneu\t[2.5000, 2.5000, 2.5000]",      # no '-' between times
    "[20.0000 - 21.0000]\tSes01F_impro01_F002\tneu\t[2.5000, high, 2.5000]",      # not a number
], ids=["no-dominance", "no-bracket", "no-code", "no-dash", "nan-arousal"])
def test_iemocap_malformed_block_header(tmp_path, bad):
    root = make_iemocap(tmp_path)
    text = S1_IMPRO01_EVAL.replace("[14.8872", bad + "\nC-E1:\tAnger;\t()\n\n[14.8872")
    eval_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    eval_file.write_text(text)
    m = read_corpus("iemocap", root)
    assert m.table.utt_id.tolist() == sorted(IEMOCAP_WAVS)  # F002 dropped, everything else kept
    assert len(m.problems) == 1
    p = m.problems[0]
    assert (p.path, p.line, p.stage, p.severity) == (str(eval_file), line_of(text, "F002"), "manifest", "error")
    assert "malformed" in p.reason and "Ses01F_impro01_F002" in p.reason
    # The bad block's vote line attaches to no other block.
    assert json.loads(row_of(m.table, "Ses01F_impro01_M000")["votes"]) == {
        "C-E1": ["Frustration", "Anger"], "C-E2": ["Other"], "C-M1": ["Frustration"]}
    assert row_of(m.table, "Ses01F_impro01_F001")["label"] == "xxx"


def test_iemocap_unparseable_utterance_id(tmp_path):
    root = make_iemocap(tmp_path)
    text = S1_SCRIPT_EVAL + "\n" + block("7.0", "8.0", "Ses01F_script01_2_X000", "neu", "3.0, 3.0, 3.0") + "\n"
    eval_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_script01_2.txt"
    eval_file.write_text(text)
    m = read_corpus("iemocap", root)
    assert m.table.utt_id.tolist() == sorted(IEMOCAP_WAVS)
    assert [(p.utt_id, p.path, p.line, p.stage) for p in m.problems] == [
        ("Ses01F_script01_2_X000", str(eval_file), line_of(text, "X000"), "manifest")]


def test_iemocap_duplicate_utterance_id(tmp_path):
    root = make_iemocap(tmp_path)
    text = eval_text(
        block("1.0000", "2.0000", "Ses01F_impro02_F000", "sad", "1.5000, 2.0000, 2.0000", "C-E1:\tSadness;\t()"),
        block("6.2901", "8.2357", "Ses01F_impro01_F000", "ang", "1.0000, 5.0000, 5.0000", "C-E1:\tAnger;\t()"),
    )
    write_dialog(root, 1, "Ses01F_impro02", text, None)
    write_wav(iemocap_wav(root, "Ses01F_impro02_F000"), 1000)
    dup_file = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro02.txt"
    m = read_corpus("iemocap", root)
    assert m.table.utt_id.tolist() == sorted([*IEMOCAP_WAVS, "Ses01F_impro02_F000"])
    assert len(m.problems) == 1
    p = m.problems[0]
    assert (p.utt_id, p.path, p.line, p.stage, p.severity) == (
        "Ses01F_impro01_F000", str(dup_file), line_of(text, "impro01_F000"), "manifest", "warning")
    assert "duplicate" in p.reason and "Ses01F_impro01.txt" in p.reason  # names where it was first seen
    first = row_of(m.table, "Ses01F_impro01_F000")  # the first occurrence wins
    assert (first["label"], first["valence"], first["transcript"]) == ("neu", 2.5, "Excuse me.")
    new = row_of(m.table, "Ses01F_impro02_F000")
    assert (new["label"], new["transcript"], new["num_samples"]) == ("sad", "", 1000.0)


def test_iemocap_unknown_label_code_is_kept_with_warning(tmp_path):
    root = make_iemocap(tmp_path)
    text = S2_EVAL.replace("\texc\t", "\tzzz\t")
    eval_file = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_impro03.txt"
    eval_file.write_text(text)
    m = read_corpus("iemocap", root)
    assert m.table.utt_id.tolist() == sorted(IEMOCAP_WAVS)
    assert row_of(m.table, "Ses02M_impro03_M001")["label"] == "zzz"
    assert len(m.problems) == 1
    p = m.problems[0]
    assert (p.utt_id, p.path, p.line, p.stage, p.severity) == (
        "Ses02M_impro03_M001", str(eval_file), line_of(text, "zzz"), "manifest", "warning")
    assert "unknown emotion code 'zzz'" in p.reason


def test_iemocap_transcript_not_utf8_is_decoded_as_latin1(tmp_path):
    root = make_iemocap(tmp_path)
    raw = S1_IMPRO01_TRANS.replace("Do you have your forms?", "Ça va? Très bien.").encode("latin-1")
    trans_file = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    trans_file.write_bytes(raw)
    m = read_corpus("iemocap", root)
    assert m.table.utt_id.tolist() == sorted(IEMOCAP_WAVS)
    assert row_of(m.table, "Ses01F_impro01_M000")["transcript"] == "Ça va? Très bien."
    assert row_of(m.table, "Ses01F_impro01_F000")["transcript"] == "Excuse me."
    assert len(m.problems) == 1
    p = m.problems[0]
    assert (p.path, p.line, p.stage, p.severity) == (str(trans_file), 2, "manifest", "warning")
    assert "UTF-8" in p.reason and "latin-1" in p.reason


def test_iemocap_missing_wav_keeps_row_and_records_audio_problem(tmp_path):
    root = make_iemocap(tmp_path)
    wav = iemocap_wav(root, "Ses01F_impro01_F001")
    wav.unlink()
    unprobed = read_corpus("iemocap", root, probe=False)
    assert unprobed.problems == [] and len(unprobed.table) == 6
    m = read_corpus("iemocap", root, probe=True)
    assert m.table.utt_id.tolist() == sorted(IEMOCAP_WAVS)
    r = row_of(m.table, "Ses01F_impro01_F001")
    assert r["label"] == "xxx" and r["transcript"] == "Yeah." and r["path"] == str(wav)
    for c in ("duration_s", "num_samples", "sample_rate", "channels"):
        assert math.isnan(r[c]), c
    assert r["audio_sha1"] == ""
    assert m.problems == [ExtractionProblem("Ses01F_impro01_F001", str(wav), "audio", "file not found")]
    assert row_of(m.table, "Ses01F_impro01_F000")["num_samples"] == 4000.0


def test_iemocap_session_without_emoevaluation_folder(tmp_path):
    root = make_iemocap(tmp_path)
    (root / "Session3" / "dialog").mkdir(parents=True)
    m = read_corpus("iemocap", root, probe=False)
    assert len(m.table) == 6
    assert [(p.path, p.stage) for p in m.problems] == [(str(root / "Session3/dialog/EmoEvaluation"), "manifest")]


# ----------------------------------------------------------------------------- RAVDESS


def test_ravdess(tmp_path):
    a = write_wav(tmp_path / "Actor_01" / "03-01-05-01-02-01-01.wav", 4800, rate=48_000)
    write_wav(tmp_path / "Actor_02" / "03-01-03-02-01-02-02.wav", 9600, rate=48_000, channels=2)
    bad_emotion = write_wav(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav", 480, rate=48_000)
    bad_name = write_wav(tmp_path / "Actor_02" / "notes.wav", 480, rate=48_000)
    m = read_corpus("ravdess", tmp_path)
    assert list(m.table.columns) == [*MANIFEST_COLUMNS, "intensity", "vocal_channel"]
    assert m.table.utt_id.tolist() == ["03-01-03-02-01-02-02", "03-01-05-01-02-01-01"]
    ra = row_of(m.table, "03-01-05-01-02-01-01")
    assert {k: ra[k] for k in ("corpus", "path", "speaker", "gender", "label", "transcript", "intensity",
                               "vocal_channel", "session", "dialog_type", "votes")} == {
        "corpus": "ravdess", "path": str(a), "speaker": "Actor_01", "gender": "M", "label": "angry",
        "transcript": "Dogs are sitting by the door", "intensity": "normal", "vocal_channel": "speech",
        "session": "", "dialog_type": "", "votes": ""}
    assert (ra["sample_rate"], ra["channels"], ra["num_samples"], ra["duration_s"]) == (48000.0, 1.0, 4800.0, 0.1)
    assert ra["audio_sha1"] == sha1_of(a)
    rb = row_of(m.table, "03-01-03-02-01-02-02")
    assert (rb["speaker"], rb["gender"], rb["label"], rb["transcript"], rb["intensity"]) == (
        "Actor_02", "F", "happy", "Kids are talking by the door", "strong")
    assert (rb["channels"], rb["duration_s"]) == (2.0, 0.2)
    assert math.isnan(rb["valence"])
    assert sorted((p.utt_id, p.path, p.stage, p.severity) for p in m.problems) == [
        ("03-01-09-01-01-01-01", str(bad_emotion), "manifest", "warning"),
        ("notes", str(bad_name), "manifest", "warning")]
    assert all("RAVDESS" in p.reason and "skipped" in p.reason for p in m.problems)


def test_convention_readers_need_wavs(tmp_path):
    for corpus in ("ravdess", "emodb", "cremad"):
        with pytest.raises(FileNotFoundError, match="wav"):
            read_corpus(corpus, tmp_path)


# ----------------------------------------------------------------------------- EmoDB


def test_emodb(tmp_path):
    a = write_wav(tmp_path / "wav" / "03a01Fa.wav", 1600)
    b = write_wav(tmp_path / "wav" / "16b10Tc.wav", 3200)
    bad_emotion = write_wav(tmp_path / "wav" / "03a01Xa.wav", 160)
    bad_name = write_wav(tmp_path / "wav" / "readme.wav", 160)
    m = read_corpus("emodb", tmp_path)
    assert list(m.table.columns) == [*MANIFEST_COLUMNS, "text_id"]
    assert m.table.utt_id.tolist() == ["03a01Fa", "16b10Tc"]
    ra = row_of(m.table, "03a01Fa")
    assert {k: ra[k] for k in ("corpus", "path", "speaker", "gender", "label", "transcript", "text_id")} == {
        "corpus": "emodb", "path": str(a), "speaker": "03", "gender": "M", "label": "happiness",
        "transcript": "Der Lappen liegt auf dem Eisschrank.", "text_id": "a01"}
    assert (ra["duration_s"], ra["audio_sha1"]) == (0.1, sha1_of(a))
    rb = row_of(m.table, "16b10Tc")
    assert {k: rb[k] for k in ("path", "speaker", "gender", "label", "transcript", "text_id")} == {
        "path": str(b), "speaker": "16", "gender": "F", "label": "sadness",
        "transcript": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.", "text_id": "b10"}
    assert sorted((p.utt_id, p.path, p.stage, p.severity) for p in m.problems) == [
        ("03a01Xa", str(bad_emotion), "manifest", "warning"), ("readme", str(bad_name), "manifest", "warning")]
    assert all("EmoDB" in p.reason for p in m.problems)


# ----------------------------------------------------------------------------- CREMA-D


def make_cremad(tmp_path: Path) -> dict[str, Path]:
    wavs = {
        "1001_DFA_ANG_XX": write_wav(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav", 1600),
        "1002_IEO_HAP_HI": write_wav(tmp_path / "AudioWAV" / "1002_IEO_HAP_HI.wav", 800),
        "1003_TSI_NEU_LO": write_wav(tmp_path / "AudioWAV" / "1003_TSI_NEU_LO.wav", 800),
    }
    write_wav(tmp_path / "AudioWAV" / "1001_DFA_XYZ_XX.wav", 160)   # unknown emotion
    write_wav(tmp_path / "AudioWAV" / "1001_ABC_ANG_XX.wav", 160)   # unknown sentence
    write_wav(tmp_path / "AudioWAV" / "1001_DFA_ANG.wav", 160)      # no intensity
    return wavs


def test_cremad_without_demographics(tmp_path):
    wavs = make_cremad(tmp_path)
    m = read_corpus("cremad", tmp_path)
    assert list(m.table.columns) == [*MANIFEST_COLUMNS, "intensity"]
    assert m.table.utt_id.tolist() == sorted(wavs)
    r = row_of(m.table, "1001_DFA_ANG_XX")
    assert {k: r[k] for k in ("corpus", "path", "speaker", "gender", "label", "transcript", "intensity")} == {
        "corpus": "cremad", "path": str(wavs["1001_DFA_ANG_XX"]), "speaker": "1001", "gender": "",
        "label": "ANG", "transcript": "Don't forget a jacket", "intensity": "XX"}
    assert (r["duration_s"], r["audio_sha1"]) == (0.1, sha1_of(wavs["1001_DFA_ANG_XX"]))
    r2 = row_of(m.table, "1002_IEO_HAP_HI")
    assert (r2["speaker"], r2["label"], r2["transcript"], r2["intensity"]) == ("1002", "HAP", "It's eleven o'clock", "HI")
    assert m.table.gender.tolist() == ["", "", ""]
    assert sorted(p.utt_id for p in m.problems) == ["1001_ABC_ANG_XX", "1001_DFA_ANG", "1001_DFA_XYZ_XX"]
    assert all(p.stage == "manifest" and p.severity == "warning" and "CREMA-D" in p.reason for p in m.problems)
    assert {p.path for p in m.problems} == {str(tmp_path / "AudioWAV" / f"{u}.wav")
                                            for u in ("1001_ABC_ANG_XX", "1001_DFA_ANG", "1001_DFA_XYZ_XX")}


def test_cremad_gender_from_video_demographics(tmp_path):
    make_cremad(tmp_path)
    (tmp_path / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n"
        "1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Caucasian,Not Hispanic\n"
        "1003,30,,Unknown,Not Hispanic\n")
    m = read_corpus("cremad", tmp_path, probe=False)
    assert dict(zip(m.table.utt_id, m.table.gender)) == {
        "1001_DFA_ANG_XX": "M", "1002_IEO_HAP_HI": "F", "1003_TSI_NEU_LO": ""}  # blank sex stays unknown


# ----------------------------------------------------------------------------- generic CSV


CSV_TEXT = (
    "utt_id,path,label,speaker,session,transcript,valence,fold,age\n"
    'u1,audio/u1.wav,ang,spk1,1,"Hello, world.",3.5,1,34\n'
    "u2,{abs},neu,spk2,2,,,2,\n"
)


def make_csv(tmp_path: Path) -> tuple[Path, Path, Path]:
    u1 = write_wav(tmp_path / "corpus" / "audio" / "u1.wav", 1600)
    u2 = write_wav(tmp_path / "elsewhere" / "u2.wav", 4000, rate=8000)
    csv = tmp_path / "corpus" / "manifest.csv"
    csv.write_text(CSV_TEXT.format(abs=u2))
    return csv, u1, u2


def test_csv_manifest_exact_values(tmp_path):
    csv, u1, u2 = make_csv(tmp_path)
    m = read_corpus("csv", csv.parent)
    assert m.problems == []
    assert list(m.table.columns) == [*MANIFEST_COLUMNS, "age"]
    assert m.table.utt_id.tolist() == ["u1", "u2"]
    r1 = row_of(m.table, "u1")
    assert {k: r1[k] for k in ("corpus", "path", "label", "speaker", "session", "transcript", "valence", "fold",
                               "age", "gender", "dialog_type", "votes")} == {
        "corpus": "csv", "path": str(u1), "label": "ang", "speaker": "spk1", "session": "1",
        "transcript": "Hello, world.", "valence": 3.5, "fold": "1", "age": "34", "gender": "",
        "dialog_type": "", "votes": ""}
    assert math.isnan(r1["arousal"]) and math.isnan(r1["dominance"])
    assert (r1["num_samples"], r1["sample_rate"], r1["audio_sha1"]) == (1600.0, 16000.0, sha1_of(u1))
    r2 = row_of(m.table, "u2")
    assert (r2["path"], r2["label"], r2["session"], r2["transcript"], r2["fold"], r2["age"]) == (
        str(u2), "neu", "2", "", "2", "")
    assert math.isnan(r2["valence"])
    assert (r2["sample_rate"], r2["duration_s"]) == (8000.0, 0.5)


def test_csv_manifest_given_as_file_and_sessions(tmp_path):
    csv, u1, _ = make_csv(tmp_path)
    m = read_corpus("csv", csv, probe=False)
    assert m.table.utt_id.tolist() == ["u1", "u2"] and row_of(m.table, "u1")["path"] == str(u1)
    assert read_corpus("csv", csv, ["2"], probe=False).table.utt_id.tolist() == ["u2"]


def test_csv_manifest_missing_required_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("id,path,label\nu1,a.wav,ang\n")
    with pytest.raises(ValueError, match=r"utt_id"):
        read_corpus("csv", tmp_path)
    (tmp_path / "manifest.csv").write_text("utt_id,file,label\nu1,a.wav,ang\n")
    with pytest.raises(ValueError, match=r"'path'"):
        read_corpus("csv", tmp_path)


def test_csv_manifest_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.csv"):
        read_corpus("csv", tmp_path)


def test_csv_manifest_bad_rows(tmp_path):
    write_wav(tmp_path / "a.wav", 160)
    csv = tmp_path / "manifest.csv"
    csv.write_text("utt_id,path,valence\n"
                   "a,a.wav,high\n"
                   ",b.wav,3\n"
                   "a,c.wav,2\n"
                   "d,missing.wav,1\n")
    m = read_corpus("csv", tmp_path)
    assert m.table.utt_id.tolist() == ["a", "d"]
    assert math.isnan(row_of(m.table, "a")["valence"]) and row_of(m.table, "a")["path"] == str(tmp_path / "a.wav")
    got = [(p.utt_id, p.path, p.stage, p.severity, p.line) for p in m.problems]
    assert got == [
        ("a", str(csv), "manifest", "warning", 2),          # valence not a number
        ("", str(csv), "manifest", "error", 3),             # empty utt_id
        ("a", str(csv), "manifest", "warning", 4),          # duplicate
        ("d", str(tmp_path / "missing.wav"), "audio", "error", -1),
    ]
    assert "not a number" in m.problems[0].reason and "duplicate" in m.problems[2].reason
    assert m.problems[3].reason == "file not found"


# ----------------------------------------------------------------------------- dispatch


def test_read_corpus_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError) as err:
        read_corpus("msp-improv", tmp_path)
    assert "msp-improv" in str(err.value)
    for name in ("iemocap", "ravdess", "emodb", "cremad", "csv"):
        assert name in CORPORA and repr(name) in str(err.value)
