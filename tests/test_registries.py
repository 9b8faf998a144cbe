"""The corpus and fold-protocol registries drive the CLI: choices, options, routing and replay agree with them."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sercache.cli import cli
from sercache.corpora import corpora, get_corpus
from sercache.splits.registry import (
    OPTIONS,
    RoutingError,
    choosable,
    cli_options,
    protocols,
    recorded_options,
    refuse_unused_fraction,
    route,
)


def train_defaults() -> dict:
    return {p.name: p.default for p in cli.commands["train"].params}


def test_cli_choices_are_the_registries():
    params = {p.name: p for p in cli.commands["extract"].params}
    assert list(params["corpus"].type.choices) == sorted(corpora())
    assert {"iemocap", "ravdess", "emodb", "cremad", "csv", "msp-podcast"} <= set(corpora())
    train = {p.name: p for p in cli.commands["train"].params}
    assert list(train["protocol"].type.choices) == choosable() and "folds" not in choosable()
    for option in cli_options():
        # no click default (None: not given, so an option the protocol does not read is refused); help shows it
        assert option.flag in train[option.param].opts and train[option.param].default is None
        assert option.default is None or f"[default: {option.default}]" in train[option.param].help


def test_every_corpus_declares_known_defaults():
    from sercache.splits import PRESETS

    for name, corpus in corpora().items():
        assert corpus.name == name and callable(corpus.read)
        assert corpus.labels is None or PRESETS[corpus.labels].corpus == name
        assert corpus.protocol is None or corpus.protocol in protocols()
    with pytest.raises(ValueError, match=r"unknown corpus 'nope'; choose one of \['cremad'"):
        get_corpus("nope")


@pytest.mark.parametrize("given", [
    {}, {"protocol": "loso", "valid": "fraction", "valid_fraction": 0.3}, {"protocol": "lospk", "valid_speakers": 2},
    {"protocol": "session-holdout", "holdout_session": "3"}, {"protocol": "session-holdout", "valid": "group"},
    {"protocol": "random", "ratios": "0.7,0.2,0.1"}, {"protocol": "predefined"},
    {"fold_file": "/folds.csv"}, {"protocol": "emobox", "fold_file": "/emobox", "valid": "fraction"},
    {"protocol": "partition"}, {"protocol": "session-holdout", "valid_fraction": 0.3}])
def test_routing_then_replay_gives_the_same_protocol_options(given):
    """What a run records (protocol, protocol_options) maps back to options that route to the same record."""
    o = {**train_defaults(), **given}
    protocol, options = route(o)
    assert all(key in OPTIONS for key in options)
    if protocol is None:  # the corpus's default, chosen with the cache
        return
    recorded = {**options, **({"path": o["fold_file"]} if o["fold_file"] else {})}
    again = route({**train_defaults(), **recorded_options(protocol, recorded)})
    assert again == (protocol, options)


def test_routing_refuses_what_does_not_fit():
    with pytest.raises(RoutingError, match=r"--folds /f.csv replaces --protocol; drop --protocol loso"):
        route({**train_defaults(), "protocol": "loso", "fold_file": "/f.csv"})
    with pytest.raises(RoutingError, match=r"--protocol emobox reads fold files"):
        route({**train_defaults(), "protocol": "emobox"})
    with pytest.raises(RoutingError, match=r"--ratios 'a,b': give train,valid,test fractions"):
        route({**train_defaults(), "protocol": "random", "ratios": "a,b"})
    assert route({**train_defaults(), "protocol": "random"})[1] == {"ratios": (0.8, 0.1, 0.1)}


@pytest.mark.parametrize(("given", "expect"), [
    ({"protocol": "loso", "holdout_session": "3"},
     "--session 3: protocol 'loso' does not read --session (it is for --protocol session-holdout); drop it"),
    ({"holdout_session": "3"}, "--session 3: the corpus's default protocol (loso or lospk) does not read --session"),
    ({"protocol": "lospk", "ratios": "0.6,0.2,0.2"}, "--ratios 0.6,0.2,0.2: protocol 'lospk' does not read --ratios "
                                                      "(it is for --protocol random)"),
    ({"fold_file": "/f.csv", "ratios": "0.6,0.2,0.2"}, "--ratios 0.6,0.2,0.2: protocol 'folds' does not read"),
    ({"protocol": "random", "valid": "group"}, "--valid group: protocol 'random' does not read --valid (protocol "
                                               "'random' makes its own validation split)"),
    ({"protocol": "partition", "valid_speakers": 2}, "--valid-speakers 2: protocol 'partition' does not read"),
    ({"protocol": "random", "valid_fraction": 0.3}, "--valid-fraction 0.3: protocol 'random' does not read"),
])
def test_routing_refuses_an_option_the_protocol_does_not_read(given, expect):
    """Ignored, these would make other folds than the command says (before, each was dropped in silence)."""
    with pytest.raises(RoutingError, match=re.escape(expect)):
        route({**train_defaults(), **given})


@pytest.mark.parametrize(("given", "expect"), [
    ({}, "--valid-fraction 0.3: validation here is --valid group (the corpus default protocol's default)"),
    ({"protocol": "lospk"}, "--valid group (lospk's default): --valid group holds out a training session"),
    ({"protocol": "loso", "valid": "group"}, "validation here is --valid group: "),
    ({"protocol": "loso", "valid": "speakers"}, "--valid speakers holds out whole training speakers"),
    ({"valid_speakers": 2}, "--valid speakers holds out whole training speakers"),
    ({"fold_file": "/f.csv", "valid": "group"}, "validation here is --valid group"),
])
def test_a_validation_fraction_where_validation_is_not_a_fraction_is_refused(given, expect):
    """Before, --valid-fraction under --valid group was recorded and ignored: the run said a share it never used."""
    with pytest.raises(RoutingError, match=re.escape(expect)):
        refuse_unused_fraction({**train_defaults(), "valid_fraction": 0.3, **given})


@pytest.mark.parametrize("given", [
    {"valid": "fraction"}, {"protocol": "lospk", "valid": "fraction"}, {"protocol": "session-holdout"},
    {"fold_file": "/f.csv"}, {"protocol": "emobox", "fold_file": "/emobox"}])
def test_a_validation_fraction_is_taken_where_it_is_used_or_may_be(given):
    refuse_unused_fraction({**train_defaults(), "valid_fraction": 0.3, **given})  # no refusal
    refuse_unused_fraction({**train_defaults(), "protocol": "loso"})  # no fraction given: nothing to say
    # the default share: what every run records beside valid: group, and replayed commands spell out
    refuse_unused_fraction({**train_defaults(), "protocol": "loso", "valid_fraction": 0.2})


def test_session_holdout_takes_a_validation_fraction_without_valid():
    """session-holdout validates on a fraction by default: --valid-fraction alone sets it (before: ignored)."""
    assert route({**train_defaults(), "protocol": "session-holdout", "valid_fraction": 0.3}) == (
        "session-holdout", {"session": "2", "valid_fraction": 0.3})


def test_the_cli_reads_the_registries_without_pandas():
    code = ("import sys, sercache.cli; from sercache.splits.registry import protocols; protocols(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'sklearn', 'torch', 'h5py')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
