"""The small tables are checksummed, and a cache without its registry is not called sound."""
from __future__ import annotations

import shutil

import h5py
import pytest
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.store.errors import CacheCorruptError
from tests.test_outside_cache import small_cache


def test_a_label_edited_after_extraction_is_refused(tmp_path):
    cache = small_cache(tmp_path / "cache")
    manifest = sorted(cache.glob("*/utterances.h5"))[0]
    with h5py.File(manifest, "r+") as f:
        labels = f["utterances"]["label"]
        values = labels.asstr()[()]
        values[0] = "hap" if values[0] != "hap" else "sad"
        labels[...] = values.astype(object)
    with pytest.raises(CacheCorruptError, match="checksum") as err:
        sercache.open_cache(cache)
    assert str(manifest) in str(err.value)
    verify = CliRunner().invoke(cli, ["cache", "verify", str(cache)])
    assert verify.exit_code != 0 and "checksum" in verify.output
    train = CliRunner().invoke(cli, ["train", str(cache), "--head", "linear", "--audio-stream", "mfcc",
                                     "--protocol", "lospk", "--out", str(tmp_path / "run")])
    assert train.exit_code == 2 and str(manifest) in train.output
    assert not (tmp_path / "run").exists()


def test_a_sound_cache_verifies(tmp_path):
    cache = small_cache(tmp_path / "cache")
    assert CliRunner().invoke(cli, ["cache", "verify", str(cache)]).exit_code == 0


def test_a_lost_shard_is_told_even_without_the_registry(tmp_path):
    cache = small_cache(tmp_path / "cache")
    shards = sorted(p.parent for p in cache.glob("*/utterances.h5"))
    assert len(shards) > 1
    shutil.rmtree(shards[-1])
    verify = CliRunner().invoke(cli, ["cache", "verify", str(cache)])
    assert verify.exit_code != 0 and f"shard missing: {shards[-1] / 'utterances.h5'}" in verify.output
    (cache / "sercache.json").unlink()  # the registry lost too: the cache must still not pass as whole
    verify = CliRunner().invoke(cli, ["cache", "verify", str(cache)])
    assert verify.exit_code != 0 and "sercache.json is missing" in verify.output
