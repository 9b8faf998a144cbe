"""`train --config` reads a hostile file within bounded memory, and refuses values the options would misread."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.training.config_file import ConfigFileError, load_train_file

#: Memory the child may allocate beyond what its imports took: far below what the alias bomb expands to.
MEMORY_HEADROOM = 256 * 2**20


def alias_bomb(levels: int = 10) -> str:
    """``set:`` with ten aliases of the level below per level: 10**levels strings when expanded (~450 bytes)."""
    lines = ["set:", '  l0: &l0 ["lolololol", "lolololol", "lolololol", "lolololol", "lolololol", "lolololol", '
             '"lolololol", "lolololol", "lolololol", "lolololol"]']
    for k in range(1, levels):
        lines.append(f"  l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the address-space size from /proc")
def test_an_alias_bomb_is_refused_within_a_memory_bound(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 1000
    child = textwrap.dedent(f"""
        import os, resource, sys
        from sercache.training.config_file import ConfigFileError, load_train_file
        import yaml  # noqa: F401 - loaded before the limit, as every import
        used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + {MEMORY_HEADROOM}, used + {MEMORY_HEADROOM}))
        try:
            load_train_file(sys.argv[1])
        except ConfigFileError as exc:
            print(exc)
            sys.exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr[-2000:]  # MemoryError (a traceback) while the names were unchecked
    assert "line 2: YAML anchors and aliases" in done.stdout and str(path) in done.stdout


@pytest.mark.parametrize(("text", "expect"), [
    ("base: &b {lr: 0.1}\n", "line 1: YAML anchors and aliases (&name, *name) are not accepted"),
    ("set: {dropout: 0.1}\nx: *y\n", "line 2: YAML anchors and aliases"),
    ("set:\n  - " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply to read"),
])
def test_anchors_aliases_and_deep_nesting_are_refused(tmp_path, text, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=r"^--config .*bad\.yaml: ") as caught:
        load_train_file(path)
    assert expect in str(caught.value)


def test_a_deeply_nested_json_config_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"set": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigFileError, match="nested too deeply to read"):
        load_train_file(path)


@pytest.mark.parametrize(("value", "expect", "absent"), [
    ("[" + ", ".join(["123456789"] * 2000) + "]", "found a list whose entry 123456789 is not KEY=VALUE", "123456789, 1"),
    ('"' + "x" * 20_000 + '"', "found a str", "xxxxxxxxxx"),
    ('{"not a name": 1}', "set: 'not a name' is not a hyperparameter name", None),
    ('{"' + "y-" * 500 + '": 1}', "is not a hyperparameter name", "y-" * 50),
])
def test_a_bad_set_is_refused_without_quoting_it_whole(tmp_path, value, expect, absent):
    path = tmp_path / "bad.yaml"
    path.write_text(f"set: {value}\n")
    with pytest.raises(ConfigFileError) as caught:
        load_train_file(path)
    message = str(caught.value)
    assert expect in message and len(message) < 500
    assert absent is None or absent not in message


#: A one-task, one-epoch linear probe: what a case below changes (today's code would train it).
BASE = {"head": "linear", "audio_stream": "mfcc", "fold": "'1'", "seeds": "1", "epochs": "1", "device": "cpu",
        "no_progress": "true"}


@pytest.mark.parametrize(("line", "expect"), [
    ("epochs: .inf", "epochs: expected a whole number, found inf"),
    ("seeds: 1.0e+29", "seeds: expected a whole number, found 1e+29"),
    ("seeds: 100000000000000000000000000000", "seeds: 100000000000000000000000000000 is not in the range 1<=x<=2147483647"),
    ("epochs: 2.5", "epochs: expected a whole number, found 2.5"),
    ("batch_size: true", "batch_size: expected a value for --batch-size, not true or false"),
    ("split_seed: -1", "split_seed: -1 is not in the range 0<=x<=4294967295"),
    ("lr: .nan", "lr: nan is not a finite number"),
    ("lr: 1" + "0" * 400, "lr: 10000000000000000000... is too large for a number"),
    ("tensorboard: 1", "tensorboard: expected true or false, found 1"),
])
def test_file_values_of_the_wrong_kind_are_refused_naming_the_key(small_cache, tmp_path, line, expect):
    key = line.split(":")[0]
    path = tmp_path / "bad.yaml"
    path.write_text(f"cache: {small_cache}\n" + "".join(f"{k}: {v}\n" for k, v in BASE.items() if k != key) + line + "\n")
    result = CliRunner().invoke(cli, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert f"error: {path}: {expect}" in result.output and len(result.output) < 400
    assert not (tmp_path / "run").exists()
