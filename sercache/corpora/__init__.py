"""Corpora: one file per corpus in this package, each its reader and one :func:`register_corpus` call.

A corpus file (``sercache/corpora/<name>.py``) holds its reader and calls :func:`register_corpus` with
the reader, its default label preset, its default fold protocol and, when its shards are not its
sessions, its shard naming. ``--corpus`` choices, ``sercache labels``' defaults and the defaults of
``sercache train``/``eval`` all come from here.

Why a package of its own, just above ``store``: training reads a corpus's defaults (``splits`` and
``training`` may not import ``extract``), and the readers need only the store's records, pandas
and the standard library; probing the audio (``features``) is extraction's work
(``sercache.extract.manifests``). This module is stdlib-only, so the CLI lists the names cheaply; the
first read of the registry imports the corpus files of this package.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sercache.registry import MappingView, Registry, RegistryError

#: The package whose modules register corpora (imported on the first read of the registry).
CORPUS_PACKAGE = "sercache.corpora"


@dataclass(frozen=True)
class LabelPreset:
    """A named label map: the corpus's own codes -> the classes a model predicts (``sercache labels``).

    Codes the preset does not map are dropped from training and evaluation.
    """

    name: str
    corpus: str
    classes: tuple[str, ...]
    mapping: dict[str, str]  # corpus code -> class
    note: str = ""

    def describe(self) -> str:
        groups = {c: sorted(k for k, v in self.mapping.items() if v == c) for c in self.classes}
        rule = "; ".join(f"{c} <- {'+'.join(g)}" for c, g in groups.items())
        return f"{self.name} ({self.corpus}): {rule}" + (f". {self.note}" if self.note else "")


@dataclass(frozen=True)
class Corpus:
    """A corpus ``sercache extract --corpus NAME`` can read.

    Args:
        name: the ``--corpus`` value, also written into every manifest row's ``corpus``.
        read: ``read(root, sessions) -> Manifest`` (see ``sercache.corpora.base``).
        labels: the label preset used when a cache of this corpus is trained without ``--labels``; one of
            ``presets`` (or of a corpus registered before), else registration is refused.
        presets: the corpus's label presets, registered with it.
        protocol: the fold protocol used without ``--protocol``; None: leave-one-session-out when
            every utterance has a session, else leave-one-speaker-out.
        shards: ``shards(table) -> Series`` of shard names per manifest row; None: ``Session<k>`` per
            session where every utterance has one, else ``all``.
        problem_shards: ``problem_shards(path, shard_names) -> shards`` that a problem with no
            utterance (a malformed label file) belongs to; None: the ``Session<k>`` named in the path,
            else every shard.
        summary: one line for the help.
        layout: where one utterance's audio lies under ROOT, as an example path (``wav/03a01Fa.wav``);
            what `extract` shows when ROOT holds none of this corpus's utterances.
    """

    name: str
    read: Callable[..., Any]
    labels: str | None = None
    protocol: str | None = None
    shards: Callable[[Any], Any] | None = None
    problem_shards: Callable[[str, list[str]], list[str]] | None = None
    summary: str = ""
    layout: str = ""
    presets: tuple[LabelPreset, ...] = ()


_CORPORA: Registry[Corpus] = Registry("corpus", CORPUS_PACKAGE)
_REGISTRY = _CORPORA.entries  # name -> Corpus (``extract.manifests.CORPORA``)
#: Label presets by name, declared by the corpus files (an alias is a second name for the same preset).
_PRESETS: Registry[LabelPreset] = Registry("label preset", CORPUS_PACKAGE)


def register_corpus(corpus: Corpus) -> Corpus:
    """Make ``corpus`` and its label presets available by name (a corpus file calls this once, at import).

    Refused (``RegistryError``) when a preset belongs to another corpus, a name is taken, or the default
    preset ``labels`` is not declared: a typo fails here, not at ``train`` after hours of extraction.
    """
    known = set(_PRESETS.entries) | {p.name for p in corpus.presets}
    if corpus.labels and corpus.labels not in known:
        raise RegistryError(f"corpus {corpus.name!r}: default label preset {corpus.labels!r} is not declared; "
                            f"its presets: {[p.name for p in corpus.presets]} (declare it in presets=)")
    wrong = [p.name for p in corpus.presets if p.corpus != corpus.name]
    if wrong:
        raise RegistryError(f"corpus {corpus.name!r}: presets {wrong} name another corpus in their corpus=")
    taken = [p.name for p in corpus.presets if p.name in _PRESETS.entries]
    if corpus.name in _CORPORA.entries or taken:
        raise RegistryError(f"corpus {corpus.name!r}: the name or presets {taken} are taken")
    for preset in corpus.presets:
        _PRESETS.add(preset.name, preset)
    return _CORPORA.add(corpus.name, corpus)


def add_preset_alias(alias: str, name: str) -> None:
    """A second name for a registered preset (``glam`` for ``iemocap4-exc``)."""
    _PRESETS.add(alias, _PRESETS.entries[name])


def presets() -> dict[str, LabelPreset]:
    """Every label preset, by name, aliases included (the corpus files are imported on the first call)."""
    return _PRESETS.all()


def corpora() -> dict[str, Corpus]:
    """Every registered corpus, by name (the corpus files are imported on the first call)."""
    return _CORPORA.all()


def get_corpus(name: str) -> Corpus:
    return _CORPORA.get(name)


class _Defaults(MappingView):
    """``corpus -> default`` of one field of the registered corpora, read when used (not at import)."""

    def __init__(self, field: str) -> None:
        self._field = field

    def _mapping(self) -> dict[str, str]:
        return {n: getattr(c, self._field) for n, c in corpora().items() if getattr(c, self._field)}

    def __repr__(self) -> str:
        return repr(self._mapping())


#: Default label preset per corpus (``splits.DEFAULT_PRESET``), from the registry.
DEFAULT_LABELS: Mapping[str, str] = _Defaults("labels")
#: Default fold protocol per corpus (``splits.DEFAULT_PROTOCOL``), from the registry.
DEFAULT_PROTOCOLS: Mapping[str, str] = _Defaults("protocol")
