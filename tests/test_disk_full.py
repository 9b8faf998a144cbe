"""A full disk stops extraction and training cleanly: a named error, nothing torn, and a resume once there is room.

The disk is a real one: a small tmpfs mounted for the test (needs root; skipped elsewhere).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.store.writer import FREE_SPACE_RESERVE


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def write_corpus(root: Path, n: int, seconds: float) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["utt_id,path,label,speaker"]
    for i in range(n):
        sf.write(root / f"u{i:02d}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)).astype("float32"), 16000)
        lines.append(f"u{i:02d},u{i:02d}.wav,{'ang' if i % 2 else 'neu'},spk{i % 4}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_extraction_stops_before_the_disk_is_full_then_resumes(tmp_path):
    root = write_corpus(tmp_path / "corpus", 24, 4.0)  # logmel: about 128 KB per utterance
    args = ["extract", str(root), "--corpus", "csv", "--streams", "logmel", "--flush-seconds", "0", "--no-progress"]
    with tmpfs(tmp_path / "disk", FREE_SPACE_RESERVE + (1 << 20)) as disk:
        out = disk / "cache"
        full = CliRunner().invoke(cli, [*args, "--out", str(out)])
        assert full.exit_code == 2, full.output
        assert "MB free on the disk of" in full.output and "rerun the same command to resume" in full.output
        assert "Traceback" not in full.output
        segments = sorted(out.glob("all/.staging/logmel/seg-*.h5"))
        assert segments, "nothing was staged before the disk filled"
        for seg in segments:  # every staged segment is whole
            with h5py.File(seg, "r") as f:
                assert f.attrs["segment"]
        resize(disk, FREE_SPACE_RESERVE + (16 << 20))
        resumed = CliRunner().invoke(cli, [*args, "--out", str(out)])
        assert resumed.exit_code == 0, resumed.output
        cache = sercache.open_cache(out)
        assert len(cache.streams["logmel"].shards) == 1 and len(cache.utterances) == 24
        assert CliRunner().invoke(cli, ["cache", "verify", str(out)]).exit_code == 0


@pytest.mark.slow
def test_a_full_disk_fails_each_training_task_alone(signal_cache, tmp_path):
    args = ["train", str(signal_cache), "--head", "linear", "--audio-stream", "mfcc", "--fold", "1", "--epochs", "2",
            "--device", "cpu", "--no-progress"]
    with tmpfs(tmp_path / "disk", 4 << 20) as disk:
        run = disk / "run"
        first = CliRunner().invoke(cli, [*args, "--seeds", "1", "--out", str(run)])
        assert first.exit_code == 0, first.output
        # fill the disk, leaving room for rewriting config.json and little else
        room = 2 * (run / "config.json").stat().st_size + 8192
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(disk / "filler", "wb") as fh:
            fh.write(b"\0" * max(0, free - room))
        full = CliRunner().invoke(cli, [*args, "--seeds", "3", "--jobs", "2", "--out", str(run)])
        assert full.exit_code == 1, full.output
        assert full.output.count("failed: loso-1 seed") == 2, full.output  # seeds 1 and 2: each failed alone
        assert "MB free on that disk" in full.output or "No space left on device" in full.output
        assert "Traceback" not in full.output
        assert json.loads((run / "config.json").read_text())["head"] == "linear"  # never torn
        (disk / "filler").unlink()
        again = CliRunner().invoke(cli, [*args, "--seeds", "3", "--out", str(run)])
        assert again.exit_code == 0, again.output
        assert len(list(run.glob("loso-1/seed*/DONE"))) == 3


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte (files can still be created, as on a real full disk: inodes remain)."""
    with open(disk / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)


@pytest.mark.parametrize("command", ["extract", "train"])
def test_a_completely_full_disk_is_a_clear_message(small_cache, tmp_path, command):
    with tmpfs(tmp_path / "disk", 1 << 20) as disk:
        fill(disk)
        if command == "extract":
            root = write_corpus(tmp_path / "corpus", 2, 0.5)
            args = ["extract", str(root), "--corpus", "csv", "--streams", "mfcc", "--no-progress",
                    "--out", str(disk / "cache")]
        else:
            args = ["train", str(small_cache), "--head", "linear", "--audio-stream", "mfcc", "--fold", "1",
                    "--device", "cpu", "--no-progress", "--out", str(disk / "run")]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert not isinstance(result.exception, OSError) and "Traceback" not in result.output
        assert "no space left on the disk of" in result.output and "rerun the same command" in result.output
