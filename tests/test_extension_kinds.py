"""One registry idiom: each kind of extension is listed by `sercache catalog`; a corpus declares its presets."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.corpora import _CORPORA, _PRESETS, Corpus, LabelPreset, corpora, register_corpus
from sercache.registry import RegistryError
from sercache.splits import PRESETS, get_preset


def test_catalog_lists_every_kind():
    result = CliRunner().invoke(cli, ["catalog"])
    assert result.exit_code == 0, result.output
    sections = [line.split()[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert sections == ["streams", "corpora", "presets", "protocols", "heads", "metrics"]
    for entry in ("ssl", "iemocap", "emodb7", "glam", "loso", "gate", "kappa"):
        assert f"\n  {entry} " in result.output, entry


def test_catalog_lists_one_kind():
    result = CliRunner().invoke(cli, ["catalog", "presets"])
    assert result.exit_code == 0 and result.output.startswith("presets")
    assert "iemocap4" in result.output and "heads" not in result.output


def test_every_corpus_declares_its_default_preset():
    for name, corpus in corpora().items():
        own = {p.name for p in corpus.presets}
        assert corpus.labels is None or corpus.labels in own, name
        assert all(get_preset(p).corpus == name for p in own)
    assert PRESETS["glam"] is PRESETS["iemocap4-exc"]


def test_a_corpus_with_an_undeclared_default_preset_is_refused_when_it_registers():
    corpora()  # the real ones first
    with pytest.raises(RegistryError, match="default label preset 'toy9' is not declared; its presets: \\['toy2'\\]"):
        register_corpus(Corpus("toy-typo", lambda root, sessions: None, labels="toy9",
                               presets=(LabelPreset("toy2", "toy-typo", ("a", "b"), {"A": "a", "B": "b"}),)))
    assert "toy-typo" not in corpora() and "toy2" not in PRESETS  # nothing half-registered


def test_a_preset_of_another_corpus_is_refused():
    with pytest.raises(RegistryError, match="name another corpus"):
        register_corpus(Corpus("toy-other", lambda root, sessions: None, labels="toyx",
                               presets=(LabelPreset("toyx", "iemocap", ("a",), {"A": "a"}),)))
    assert "toy-other" not in _CORPORA.entries and "toyx" not in _PRESETS.entries
