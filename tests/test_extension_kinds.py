"""One registry idiom: each kind of extension is listed by `sercache catalog`; a corpus declares its presets.

Streams, heads and metrics are registries like corpora: a module of the package registers its entries when
imported, the first read imports the whole package (a module added to it is found), a name taken is refused.
"""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.corpora import _CORPORA, _PRESETS, Corpus, LabelPreset, corpora, register_corpus
from sercache.registry import Registry, RegistryError
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


# --- streams, heads and metrics: one module of the package each, found by the package's scan ---------------

TOY_STREAM = """
from dataclasses import dataclass

from sercache.features.streams import register_stream
from sercache.features.streams.base import StreamConfig, StreamKind


@dataclass
class ToyConfig(StreamConfig):
    pass


register_stream(StreamKind("{name}", "a stream kind added by a test", ToyConfig, lambda c, rt: None, order=65))
"""

TOY_HEAD = """
from sercache.heads import register
from sercache.heads.base import Head


@register
class ToyHead(Head):
    name = "{name}"
    summary = "a head added by a test"
"""

TOY_METRIC = """
from sercache.metrics import Metric, nan_if_empty, register_metric

register_metric(Metric("{name}", "recall-0", nan_if_empty(lambda c: c.recall[0]), order=55))
"""


def _registry(kind: str) -> Registry:
    if kind == "streams":
        from sercache.features.streams import _STREAMS
        return _STREAMS
    if kind == "heads":
        from sercache.heads import _HEADS
        return _HEADS
    from sercache.metrics import _METRICS
    return _METRICS


KINDS = {"streams": ("sercache.features.streams", TOY_STREAM), "heads": ("sercache.heads", TOY_HEAD),
         "metrics": ("sercache.metrics", TOY_METRIC)}


@pytest.fixture
def add_module(tmp_path, monkeypatch):
    """``add_module(kind, name)``: a real module ``zz_toy_<kind>`` in a second folder of the kind's package,
    registering ``name``; the registry is made to read its package again. Everything is undone afterwards."""
    added = []

    def add(kind: str, name: str) -> Registry:
        package_name, source = KINDS[kind]
        registry = _registry(kind)
        registry.all()  # the real entries first
        package = importlib.import_module(package_name)
        folder = tmp_path / kind
        folder.mkdir()
        (folder / f"zz_toy_{kind}.py").write_text(textwrap.dedent(source.format(name=name)))
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
        monkeypatch.setattr(registry, "entries", dict(registry.entries))
        monkeypatch.setattr(registry, "_loaded", False)
        added.append(f"{package_name}.zz_toy_{kind}")
        return registry

    yield add
    for module in added:
        sys.modules.pop(module, None)


@pytest.mark.parametrize("kind", list(KINDS))
def test_streams_heads_and_metrics_are_registries(kind):
    registry = _registry(kind)
    assert isinstance(registry, Registry) and registry.package == KINDS[kind][0]
    assert registry.all() and isinstance(registry.error(""), RegistryError)


def test_an_unknown_stream_head_or_metric_is_a_registry_error_and_still_a_key_error():
    from sercache.features.streams import UnknownStreamError, get_stream
    from sercache.heads import UnknownHeadError, get_head
    from sercache.metrics import UnknownMetricError, get_metric

    for get, error in ((get_stream, UnknownStreamError), (get_head, UnknownHeadError), (get_metric, UnknownMetricError)):
        with pytest.raises(error) as caught:
            get("nosuch")
        assert isinstance(caught.value, RegistryError) and isinstance(caught.value, KeyError)
        assert str(caught.value).startswith("unknown ") and "'nosuch'" in str(caught.value)


@pytest.mark.parametrize(("kind", "line"), [("streams", "a stream kind added by a test"),
                                            ("heads", "heads/zz_toy_heads.py"), ("metrics", "recall-0")])
def test_a_module_added_to_the_package_is_registered_and_catalogued(kind, line, add_module):
    registry = add_module(kind, f"toy_{kind}")
    assert f"toy_{kind}" in registry.all()
    assert sys.modules[f"{KINDS[kind][0]}.zz_toy_{kind}"]  # imported by the package's scan, not added by hand
    result = CliRunner().invoke(cli, ["catalog", kind])
    assert result.exit_code == 0, result.output
    assert f"\n  {f'toy_{kind}':<14} {line}\n" in result.output


def test_an_added_stream_kind_takes_its_place_in_the_listing(add_module):
    from sercache.features.streams import stream_kinds

    add_module("streams", "toy_order")
    names = list(stream_kinds())
    assert names.index("compare") < names.index("toy_order") < names.index("whisper")  # order=65, between 61 and 70


def test_an_added_head_is_a_head_by_name(add_module):
    from sercache.heads import HEADS, get_head

    add_module("heads", "toy_head")
    assert get_head("toy_head") is HEADS["toy_head"] and HEADS["toy_head"].summary == "a head added by a test"


def test_an_added_metric_takes_its_place_in_table_order(add_module):
    from sercache.metrics import metrics

    add_module("metrics", "toy_metric")
    keys = list(metrics())
    assert keys.index("kappa") < keys.index("toy_metric") < keys.index("ccc_valence")  # order=55


@pytest.mark.parametrize(("kind", "taken"), [("streams", "ssl"), ("heads", "glam"), ("metrics", "kappa")])
def test_a_module_registering_a_taken_name_is_refused(kind, taken, add_module):
    registry = add_module(kind, taken)
    before = registry.entries[taken]
    with pytest.raises(RegistryError, match=f"{taken}.*taken"):
        registry.all()
    assert registry.entries[taken] is before


def test_a_stream_option_declared_by_two_kinds_is_refused():
    from sercache.features.streams import StreamKind, StreamOption, register_stream, stream_kinds
    from sercache.features.streams.base import StreamConfig

    assert "layers" in {o.dest for o in stream_kinds()["ssl"].options}
    twice = StreamKind("toy_twice", "h", StreamConfig, lambda c, rt: None, options=(StreamOption("layers", None, "h"),))
    with pytest.raises(RegistryError, match="'layers' is declared by stream kind 'ssl' already"):
        register_stream(twice)
    assert "toy_twice" not in stream_kinds()
