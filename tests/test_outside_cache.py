"""Extraction never writes or deletes outside --out, and --overwrite deletes only what sercache recorded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sercache.cli import cli
from sercache.store.layout import shard_dir


def write_corpus(root: Path, sessions: list[str], seconds: float = 0.5) -> Path:
    """A CSV manifest corpus with one wav per session value."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["utt_id,path,label,speaker,session"]
    for i, session in enumerate(sessions):
        sf.write(root / f"u{i}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)).astype("float32"), 16000)
        lines.append(f"u{i},u{i}.wav,{'ang' if i % 2 else 'neu'},spk{i},{session}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def extract(root: Path, out: Path, *extra: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(cli, ["extract", str(root), "--corpus", "csv", "--out", str(out), "--streams", "mfcc",
                                    "--no-progress", *extra])


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")} if path.exists() else set()


@pytest.mark.parametrize("session", ["/../../victim", "../victim", "a/b", "x y"])
def test_a_session_value_cannot_put_a_shard_outside_the_cache(tmp_path, session):
    root = write_corpus(tmp_path / "corpus", ["1", session])
    out = tmp_path / "work" / "cache"
    before = files_under(tmp_path) - files_under(out)
    result = extract(root, out)
    assert result.exit_code != 0
    assert "u1" in result.output and repr(session) in result.output and "session column" in result.output
    # nothing was written anywhere, not even the good session's shard (refused before any work)
    assert files_under(tmp_path) - files_under(out) == before
    assert not list(out.glob("*/*.h5"))


def test_shard_dir_refuses_a_path(tmp_path):
    for bad in ("../x", "/abs", ".staging", "", "a/b"):
        with pytest.raises(ValueError, match="directly inside the cache"):
            shard_dir(tmp_path, bad)
    assert shard_dir(tmp_path, "Session1") == tmp_path / "Session1"


def test_overwrite_deletes_only_recorded_streams(tmp_path):
    root = write_corpus(tmp_path / "corpus", ["1", "1"])
    out = tmp_path / "cache"
    assert extract(root, out).exit_code == 0
    assert extract(root, out, "--streams", "logmel").exit_code == 0  # a second recorded stream
    shard = out / "Session1"
    notes = shard / "notes.h5"
    notes.write_bytes(b"the user's own file")
    (shard / ".staging" / "mine").mkdir(parents=True)
    # the corpus changes: the shard's streams are stale, and --overwrite rebuilds them
    rng = np.random.default_rng(1)
    sf.write(root / "u0.wav", 0.1 * rng.standard_normal(8000).astype("float32"), 16000)
    refused = extract(root, out)
    assert refused.exit_code != 0 and "--overwrite" in refused.output
    result = extract(root, out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert notes.read_bytes() == b"the user's own file"
    assert (shard / ".staging" / "mine").is_dir()
    assert (shard / "mfcc.h5").exists()  # rebuilt by this run
    assert not (shard / "logmel.h5").exists()  # recorded, stale, deleted


def users_own_file(path: Path, how: str) -> bytes:
    """A file of the user's at a path sercache would use: an HDF5 file of their own datasets, or any bytes."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "hdf5":
        with h5py.File(path, "w") as f:
            f["my_features"] = np.arange(10.0)
    else:
        path.write_bytes(b"the user's own notes")
    return path.read_bytes()


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("name,how", [("mfcc.h5", "hdf5"), ("mfcc.h5", "bytes"), ("utterances.h5", "hdf5")])
def test_the_users_own_files_in_the_way_are_refused_before_any_work(tmp_path, overwrite, name, how):
    root = write_corpus(tmp_path / "corpus", ["1", "1"])
    mine = tmp_path / "mine"  # the user's folder: no sercache.json
    theirs = mine / "Session1" / name
    content = users_own_file(theirs, how)
    before = files_under(mine)
    result = extract(root, mine, *(["--overwrite"] if overwrite else []))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, OSError))
    assert str(theirs) in result.output and "not written by sercache" in result.output
    assert theirs.read_bytes() == content
    assert files_under(mine) == before  # refused before anything was written: no registry, lock or manifest


def test_a_cache_whose_registry_was_deleted_still_resumes(tmp_path):
    root = write_corpus(tmp_path / "corpus", ["1", "1"])
    out = tmp_path / "cache"
    assert extract(root, out).exit_code == 0
    (out / "sercache.json").unlink()  # what a damaged-registry message advises
    again = extract(root, out)
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output


def small_cache(path: Path) -> Path:
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
    from tests.conftest import synthetic_manifest

    return write_synthetic_cache(path, synthetic_manifest(n_per_speaker_label=1),
                                 [SyntheticStream("mfcc", "mfcc", 4, dtype="float32")])


def redirect_frames(stream_file: Path, secret: Path, how: str) -> None:
    """Replace the first frame dataset of a stream file by one whose bytes live in ``secret``."""
    import h5py

    with h5py.File(stream_file, "r+") as f:
        group = f["frames"]
        name = next(iter(group))
        data = group[name][()]
        secret.write_bytes(np.full(data.shape, 7.0, data.dtype).tobytes())
        del group[name]
        if how == "external":
            group.create_dataset(name, shape=data.shape, dtype=data.dtype, external=[(str(secret), 0, data.nbytes)])
        else:
            with h5py.File(secret.with_suffix(".h5"), "w") as other:
                other["x"] = np.full(data.shape, 7.0, data.dtype)
            group[name] = h5py.ExternalLink(str(secret.with_suffix(".h5")), "/x")


@pytest.mark.parametrize("how", ["external", "link"])
def test_data_stored_outside_a_cache_file_is_refused(tmp_path, how):
    from sercache import open_cache
    from sercache.store.errors import CacheCorruptError

    cache = small_cache(tmp_path / "cache")
    stream_file = next(cache.glob("*/mfcc.h5"))
    redirect_frames(stream_file, tmp_path / "elsewhere.bin", how)
    with pytest.raises(CacheCorruptError, match="refused") as err:
        open_cache(cache)
    assert str(stream_file) in str(err.value)
    verify = CliRunner().invoke(cli, ["cache", "verify", str(cache)])
    assert verify.exit_code != 0 and "refused" in verify.output
