"""The torch-free reading of the head modules (head_catalog) agrees with the registry; a new head is one file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sercache
from sercache.cli.train import train
from sercache.head_catalog import catalog, head_modules, stream_roles
from sercache.heads import HEADS


def test_catalog_matches_the_registry():
    assert catalog().heads == {name: cls.__module__.rsplit(".", 1)[-1] for name, cls in HEADS.items()}
    assert set(head_modules()) == {cls.__module__.rsplit(".", 1)[-1] for cls in HEADS.values()}


def test_every_role_a_head_reads_has_a_train_option_and_a_default_stream():
    roles = stream_roles()
    every = {"augmented_text": True, "with_text": True}  # the hyperparameters that add roles
    for cls in HEADS.values():
        wanted = set(cls.roles) | set(cls.multi_layer_roles)
        wanted |= set(cls.required_roles({k: v for k, v in every.items() if k in cls.hyperparameters()}))
        assert wanted <= set(roles), (cls.name, wanted - set(roles))
    options = {p.name: p for p in train.params}
    for role in roles.values():
        assert options[role.param].opts == [role.option] and options[role.param].help == role.help


def test_heads_command_prints_each_heads_description():
    from click.testing import CliRunner

    from sercache.cli import cli

    out = CliRunner().invoke(cli, ["heads"]).output
    assert out == "".join(HEADS[n].describe() + "\n" for n in sorted(HEADS))
    svm = HEADS["svm"].describe()
    assert "C, gamma given as lists is scored on validation UA" in svm and "training defaults" not in svm


NEW_HEAD = '''
"""A head added by one file: it reads a new ``prosody`` role."""
from torch import nn

from sercache.heads import register
from sercache.heads.base import Head, HeadOutput, masked_mean

STREAM_ROLES = {"prosody": {"default": "egemaps", "help": "Stream for the prosody role (default egemaps)."}}


@register
class ProsodyHead(Head):
    name = "prosody"
    summary = "mean of the prosody stream -> linear"
    roles = ("prosody",)

    def __init__(self, dims, n_classes, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(dims["prosody"], n_classes))

    def forward(self, batch):
        s = batch.streams["prosody"]
        return HeadOutput(self.out(masked_mean(s.x, s.mask)))
'''


@pytest.mark.slow
def test_a_new_head_with_a_new_role_is_one_new_file(tmp_path):
    """In a copy of the package, one file in heads/ gives the --head choice, the role option and `sercache heads`."""
    package = Path(sercache.__file__).parent
    shutil.copytree(package, tmp_path / "sercache", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "sercache" / "heads" / "prosody.py").write_text(NEW_HEAD)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def sercache_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "sercache", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    helptext = sercache_cli("train", "--help")
    assert "prosody" in helptext.split("--head", 1)[1].split("--", 1)[0]
    assert "--prosody-stream TEXT" in helptext and "Stream for the prosody role (default egemaps)." in helptext
    assert "reads: prosody" in sercache_cli("heads", "prosody")
    probe = ("from sercache.training.roles import ROLE_DEFAULT_STREAMS as D; from sercache.training.config_file "
             "import ROLE_STREAM as R; print(D['prosody'], R['prosody'])")
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.stdout.split() == ["egemaps", "prosody_stream"], done.stderr


def test_a_registered_class_without_a_literal_name_is_refused_with_its_file(tmp_path, monkeypatch):
    from sercache import head_catalog

    (tmp_path / "base.py").write_text("STREAM_ROLES = {'audio': {'default': 'ssl', 'help': 'h'}}\n")
    (tmp_path / "odd.py").write_text("NAME = 'x'\n\n@register\nclass Odd(Head):\n    name = NAME\n")
    monkeypatch.setattr(head_catalog, "HEADS_DIR", tmp_path)
    head_catalog.catalog.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"odd\.py: Odd\.name must be a literal"):
            head_catalog.catalog()
    finally:
        monkeypatch.undo()
        head_catalog.catalog.cache_clear()
