"""Inputs that are wrong in a way a user can fix get a message that says which way (issue 23, point 11)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from sercache.cli import cli
from sercache.runs.predict_inputs import PredictError, check_sources, collect_sources


def corpus(root: Path, rows: list[str], header: str = "utt_id,path,label") -> Path:
    """``root/manifest.csv`` with ``rows``, next to ok.wav (half a second of noise), a folder and a link loop."""
    root.mkdir(parents=True)
    sf.write(root / "ok.wav", 0.1 * np.random.default_rng(0).standard_normal(8000).astype("float32"), 16000)
    (root / "a_folder").mkdir()
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", root / "loop_b")
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root / "manifest.csv"


def extract(manifest: Path, out: Path):  # noqa: ANN201 - click Result
    return CliRunner().invoke(cli, ["extract", str(manifest), "--corpus", "csv", "--out", str(out), "--streams",
                                    "mfcc", "--no-progress"])


def problems(cache: Path) -> pd.DataFrame:
    import sercache

    return sercache.open_cache(cache).errors


@pytest.mark.parametrize("rows,message", [
    ([], "has a header (utt_id,path,label) and no rows"),
    (["x,ok.wav,neu,surprise"], "line 2: 4 fields, but the header has 3"),
    (["ok,ok.wav,neu", "x,ok.wav,neu,surprise"], "line 3: 4 fields, but the header has 3"),
], ids=["header-only", "extra-field-first-row", "extra-field"])
def test_a_malformed_manifest_is_refused_naming_the_line(tmp_path, rows, message):
    manifest = corpus(tmp_path / "corpus", rows)
    result = extract(manifest, tmp_path / "cache")
    assert result.exit_code == 2, result.output
    assert message in result.output and str(manifest) in result.output
    assert "file not found" not in result.output and not (tmp_path / "cache").exists()
    with pytest.raises(PredictError, match=message.replace("(", r"\(").replace(")", r"\)")):
        collect_sources([manifest])


@pytest.mark.parametrize("path,reason", [
    ("", "empty path"), ("a_folder", "a directory, not an audio file"), ("loop_a", "a symbolic link loop")])
def test_an_unusable_path_is_named_for_what_it_is(tmp_path, path, reason):
    manifest = corpus(tmp_path / "corpus", ["ok,ok.wav,neu", f"bad,{path},neu"])
    result = extract(manifest, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    found = problems(tmp_path / "cache")
    why = found.loc[found.utt_id == "bad", "reason"].tolist()
    assert why and all(reason in w for w in why) and not any("file not found" in w for w in why), why
    with pytest.raises(PredictError, match=reason):
        check_sources(collect_sources([_predict_manifest(manifest, path)]), None)


def _predict_manifest(manifest: Path, path: str) -> Path:
    out = manifest.with_name("predict.csv")
    out.write_text(f"path,transcript\nok.wav,one\n{path},two\n")
    return out


@pytest.mark.parametrize("rate,samples,warning", [
    (1, np.full(5, 0.1, "float32"), "sample rate 1 Hz is implausibly low"),
    (16000, np.r_[np.full(7999, 0.1), 1e30].astype("float32"), "peak amplitude 1e+30 is far above full scale")])
def test_implausible_audio_is_stored_with_a_warning(tmp_path, rate, samples, warning):
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "odd.wav", samples, rate, subtype="FLOAT")
    sf.write(root / "ok.wav", 0.1 * np.random.default_rng(0).standard_normal(8000).astype("float32"), 16000)
    (root / "manifest.csv").write_text("utt_id,path,label\nodd,odd.wav,neu\nok,ok.wav,ang\n")
    result = extract(root / "manifest.csv", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    found = problems(tmp_path / "cache")
    odd = found[(found.utt_id == "odd") & (found.severity == "warning")]
    assert any(warning in r for r in odd.reason), found.reason.tolist()
    assert not (found.utt_id == "ok").any()


def test_verify_on_a_copied_cache_repairs_the_copy(tmp_path):
    manifest = corpus(tmp_path / "corpus", ["ok,ok.wav,neu", "ok2,ok.wav,ang"])
    original = tmp_path / "original"
    assert extract(manifest, original).exit_code == 0
    copy = Path(shutil.copytree(original, tmp_path / "copy"))
    next(copy.glob("*/mfcc.h5")).unlink()  # the copy lost a stream
    result = CliRunner().invoke(cli, ["cache", "verify", str(copy)])
    assert result.exit_code != 0 and "re-extract it:" in result.output, result.output
    assert f"--out {copy.resolve()}" in result.output and str(original) not in result.output
