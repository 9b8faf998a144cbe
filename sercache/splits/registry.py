"""The fold-protocol registry: each protocol with the options it takes, declared without pandas.

``sercache train``'s ``--protocol`` choices and its per-protocol options, the routing of those options
to the protocol (:func:`route`), and how a run's recorded ``protocol_options`` map back to options
(:func:`recorded_options`) all come from here. The built-in protocols are declared below (their code
is in :mod:`sercache.splits.protocols` and :mod:`sercache.splits.foldfiles`); every module of
:mod:`sercache.splits.folds` is one more protocol that registers itself, so adding a protocol is
adding a file there. Declarations stay stdlib-only: the CLI builds its options from them at import.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sercache.errors import SercacheError
from sercache.registry import Registry


class RoutingError(SercacheError, ValueError):
    """Options that do not fit the protocol (``--folds`` with ``--protocol loso``...)."""


class RegistrationError(SercacheError, ValueError):
    """A protocol or protocol option that cannot be registered (a plugin's mistake, named in the message)."""


@dataclass(frozen=True)
class ProtocolOption:
    """One option of a protocol: its keyword (and config.json key), its flag and its click parameter.

    ``kind``: ``text``, ``path`` (an existing file or folder), ``choice`` (``choices``), ``count``
    (an integer >= 1) or ``fraction`` (0 < x < 1). ``parse`` turns the option's value into the
    protocol's (``"0.8,0.1,0.1"`` -> ``(0.8, 0.1, 0.1)``); ``show`` turns a recorded value back.
    """

    key: str
    flag: str
    param: str
    help: str
    default: Any = None
    kind: str = "text"
    choices: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Protocol:
    """A fold protocol.

    Args:
        name: the ``--protocol`` value, recorded as the run's ``protocol``.
        summary: one line for the help.
        make: ``"module:function"`` (or the function): ``make(df, **options) -> list[Fold]``; for a
            protocol that reads fold files, ``make(df, path, **options) -> FoldFileResult``.
        options: keys of :data:`OPTIONS` the protocol takes besides validation.
        validation: when the validation options (``valid``, ``valid_fraction``, ``valid_speakers``)
            are passed on: ``always``, ``given`` (only with ``--valid``/``--valid-speakers``: the
            protocol has its own default) or ``never``.
        fold_files: the fold-file formats it reads from ``--folds PATH`` (empty: it reads none).
        read_folder: ``"module:function"``: ``read_folder(path) -> FoldSource`` for a fold folder.
        choosable: offered as a ``--protocol`` choice (``folds`` is chosen by ``--folds`` alone).
    """

    name: str
    summary: str
    make: str | Callable[..., Any]
    options: tuple[str, ...] = ()
    validation: str = "always"
    fold_files: tuple[str, ...] = ()
    read_folder: str | Callable[..., Any] | None = None
    choosable: bool = True

    def function(self) -> Callable[..., Any]:
        return resolve(self.make)


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """``"package.module:name"`` -> that object (imported now); a callable is returned as it is."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _ratios(text: Any) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in str(text).split(","))
    except ValueError:
        raise RoutingError(f"--ratios {text!r}: give train,valid,test fractions, e.g. 0.8,0.1,0.1") from None


#: Every protocol option, in the order the CLI shows them. ``path`` is ``TrainRequest.folds``.
OPTIONS: dict[str, ProtocolOption] = {o.key: o for o in [
    ProtocolOption("path", "--folds", "fold_file", "Folds from a file instead of --protocol: a CSV of utt_id,fold "
                   "(each fold value tested once) or utt_id,split (train/valid/test: one fold), or an EmoBox folder "
                   "ROOT/fold_k/<corpus>_{train,test}_fold_k.jsonl. Validation default: --valid speakers when every "
                   "utterance has a speaker.", kind="path"),
    ProtocolOption("valid", "--valid", "valid", "Validation: a held-out training session (group), a fraction of "
                   "training utterances, or whole training speakers (speakers; see --valid-speakers).",
                   kind="choice", choices=("group", "fraction", "speakers")),
    ProtocolOption("valid_speakers", "--valid-speakers", "valid_speakers", "Training speakers held out for "
                   "validation (implies --valid speakers). Default: ~20%.", kind="count"),
    ProtocolOption("valid_fraction", "--valid-fraction", "valid_fraction", "Share of training utterances for "
                   "--valid fraction.", default=0.2, kind="fraction"),
    ProtocolOption("session", "--session", "holdout_session", "Test session for --protocol session-holdout.",
                   default="2", show=str),
    ProtocolOption("ratios", "--ratios", "ratios", "train,valid,test ratios for --protocol random.",
                   default="0.8,0.1,0.1", parse=_ratios, show=lambda r: ",".join(str(x) for x in r)),
]}
VALIDATION = ("valid", "valid_fraction", "valid_speakers")

_PROTOCOLS: Registry[Protocol] = Registry("protocol", "sercache.splits.folds", RoutingError)
_REGISTRY = _PROTOCOLS.entries


def register_protocol(protocol: Protocol) -> Protocol:
    """Make ``protocol`` available by its name (a protocol file calls this once, at import)."""
    unknown = [k for k in protocol.options if k not in OPTIONS]
    if unknown:
        raise RegistrationError(f"protocol {protocol.name!r}: unknown options {unknown} (register_option them first)")
    return _PROTOCOLS.add(protocol.name, protocol)


def register_option(option: ProtocolOption) -> ProtocolOption:
    """A new option for a new protocol (declared in that protocol's file, before registering it)."""
    if OPTIONS.get(option.key, option) != option:
        raise RegistrationError(f"protocol option {option.key!r} is taken")
    OPTIONS[option.key] = option
    return option


def protocols() -> dict[str, Protocol]:
    """Every protocol by name; the modules of :mod:`sercache.splits.folds` are imported on the first call."""
    return _PROTOCOLS.all()


def get_protocol(name: str) -> Protocol:
    return _PROTOCOLS.get(name)


def choosable() -> list[str]:
    """The ``--protocol`` choices."""
    return [n for n, p in protocols().items() if p.choosable]


def cli_options() -> list[ProtocolOption]:
    """The options the train command offers for the protocols (every one some protocol takes)."""
    protocols()
    return list(OPTIONS.values())


def route(o: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The train command's options (parameter name -> value) -> ``(protocol, protocol_options)``.

    ``protocol`` is None when neither ``--protocol`` nor ``--folds`` is given (the corpus's default
    is chosen with the cache); ``protocol_options`` holds what that protocol takes, as config.json
    records it (``--folds``' path is not among them: ``TrainRequest.folds`` carries it).
    """
    fold_file, protocol, valid = o.get("fold_file"), o.get("protocol"), o.get("valid")
    entry = get_protocol(protocol) if protocol is not None else None
    if fold_file is not None and entry is not None and not entry.fold_files:
        raise RoutingError(f"--folds {fold_file} replaces --protocol; drop --protocol {protocol}")
    if fold_file is None and entry is not None and entry.fold_files:
        raise RoutingError(f"--protocol {protocol} reads fold files: give them with --folds PATH")
    valid_speakers = o.get("valid_speakers")
    if valid_speakers is not None and valid not in (None, "speakers"):
        raise RoutingError(f"--valid-speakers {valid_speakers} holds out speakers: use it with --valid speakers, "
                           f"not --valid {valid}")
    valid = "speakers" if valid_speakers is not None else valid
    if entry is None and fold_file is not None:
        protocol, entry = "folds", get_protocol("folds")
    refuse_unused(o, protocol, entry)
    options: dict[str, Any] = {}
    for key in entry.options if entry else ():
        option = OPTIONS[key]
        value = _given(o, option)
        options[key] = option.parse(value) if option.parse else value
    when = entry.validation if entry else "always"  # no protocol: the default is loso or lospk
    fraction = o.get("valid_fraction")
    # "given": the protocol has its own validation default (session-holdout: a fraction), which --valid-fraction sets
    if when == "always" or (when == "given" and (valid is not None or fraction is not None)):
        if valid is not None:
            options["valid"] = valid
        options["valid_fraction"] = _given(o, OPTIONS["valid_fraction"])
        if valid_speakers is not None:  # only when given, so configs of earlier runs stay resumable
            options["valid_speakers"] = valid_speakers
    return protocol, options


def refuse_unused_fraction(o: Mapping[str, Any]) -> None:
    """Refuse ``--valid-fraction`` where validation is not a fraction (``--valid group`` or ``speakers``, given or
    the protocol's default): ignored, it would let the run's command say its split was what it was not.

    The default share is let through: every run records it beside ``valid: group`` (so config.json, and the
    commands of runs replayed from one, spell out ``--valid-fraction 0.2``), and it says nothing the record does
    not. Not part of :func:`route`, which replays read: a replay's recorded settings are not refused again.
    Fold files with no ``--valid`` are left alone: whether they hold out speakers or a fraction depends on the data.
    """
    fraction, valid = o.get("valid_fraction"), o.get("valid")
    if fraction is None or fraction == OPTIONS["valid_fraction"].default or (
            valid is None and o.get("fold_file") is not None):
        return
    if o.get("valid_speakers") is not None:
        valid = "speakers"
    protocol = o.get("protocol")
    entry = get_protocol(protocol) if protocol is not None else None
    if entry is not None and entry.validation == "never":  # refuse_unused names these
        return
    if valid is None:  # the protocol's own default; no protocol: loso or lospk, a held-out group
        param = inspect.signature(entry.function()).parameters.get("valid") if entry else None
        valid = "group" if entry is None else param.default if param is not None else None
    if valid in ("group", "speakers"):
        which = "--valid speakers holds out whole training speakers" if valid == "speakers" else \
            "--valid group holds out a training session (or speaker group)"
        default = "" if o.get("valid") is not None else f" ({protocol or 'the corpus default protocol'}'s default)"
        raise RoutingError(f"--valid-fraction {fraction}: validation here is --valid {valid}{default}: {which} and "
                           "takes no share of utterances; drop --valid-fraction, or add --valid fraction")


def _given(o: Mapping[str, Any], option: ProtocolOption) -> Any:
    """The option's value in ``o``, or its default when absent or None (not given)."""
    value = o.get(option.param)
    return option.default if value is None else value


def options_read(entry: Protocol | None) -> set[str]:
    """The option keys a protocol reads (None: the corpus's default, loso or lospk); ``path`` is not among them."""
    takes = set(entry.options if entry else ())
    if (entry.validation if entry else "always") != "never":
        takes.update(VALIDATION)
    return takes


def unread_params(protocol: str | None, fold_file: Any = None) -> list[str]:
    """The option parameters (``holdout_session``, ``ratios``...) that ``protocol`` (or a ``--folds`` run) does
    not read: a replayed file's values of these go when another protocol is asked for."""
    entry = get_protocol(protocol) if protocol else get_protocol("folds") if fold_file is not None else None
    takes = options_read(entry)
    return [o.param for key, o in OPTIONS.items() if o.kind != "path" and key not in takes]


def refuse_unused(o: Mapping[str, Any], protocol: str | None, entry: Protocol | None) -> None:
    """Refuse a protocol option the protocol does not read: ignored, it would let the folds differ from what the
    command says (``--session 3`` under loso, ``--ratios`` without ``--protocol random``, ``--valid-speakers 2``
    under random, whose validation comes from its ratios)."""
    takes = options_read(entry)
    which = f"protocol {protocol!r}" if protocol else "the corpus's default protocol (loso or lospk)"
    for key, option in OPTIONS.items():
        value = o.get(option.param)
        if option.kind == "path" or value is None or key in takes:
            continue
        users = [name for name, p in protocols().items() if key in p.options and p.choosable]
        hint = (f"it is for --protocol {' or '.join(users)}" if users else
                f"{which} makes its own validation split" if key in VALIDATION else "no protocol here reads it")
        raise RoutingError(f"{option.flag} {value}: {which} does not read {option.flag} ({hint}); drop it, "
                           "or choose the protocol that reads it")


def complete_options(protocol: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every default the protocol applies spelled out, as :func:`route` records them.

    A run made through the Python API (the demo's) then records the same ``protocol_options`` as the
    same run made by the CLI, so either replays exactly; an unknown protocol's options are kept as given.
    """
    out = dict(options)
    entry = protocols().get(protocol)
    if entry is None:
        return out
    for key in entry.options:
        if key not in out:
            option = OPTIONS[key]
            out[key] = option.parse(option.default) if option.parse else option.default
    if entry.validation == "always" or (entry.validation == "given" and out.get("valid") is not None):
        out.setdefault("valid_fraction", OPTIONS["valid_fraction"].default)
    return out


def recorded_options(protocol: str, recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A run's ``protocol`` and ``protocol_options`` -> the train options (parameter -> value) that give them.

    Records that are not options (a fold file's ``format``, ``files``, ``sha1``) are left out.
    """
    entry = protocols().get(protocol)
    out: dict[str, Any] = {}
    if entry is None or entry.choosable:
        out["protocol"] = protocol
    for key, value in recorded.items():
        if key in OPTIONS:
            option = OPTIONS[key]
            out[option.param] = option.show(value) if option.show else value
    return out


def _builtin(name: str, summary: str, make: str, **kw: Any) -> None:
    register_protocol(Protocol(name, summary, make, **kw))


_builtin("loso", "leave one session out; validation: another training session", "sercache.splits.protocols:loso")
_builtin("lospk", "leave one speaker out; validation: a training session", "sercache.splits.protocols:lospk")
_builtin("session-holdout", "one named test session (--session)", "sercache.splits.protocols:session_holdout",
         options=("session",), validation="given")
_builtin("random", "stratified random train/valid/test (--ratios), speaker-dependent",
         "sercache.splits.protocols:random_split", options=("ratios",), validation="never")
_builtin("predefined", "folds from the manifest's fold column (--corpus csv)", "sercache.splits.protocols:predefined")
_builtin("folds", "folds from --folds PATH (a CSV of utt_id,fold or utt_id,split, or a fold folder)",
         "sercache.splits.foldfiles:folds_from_file", fold_files=("csv-fold", "csv-split", "folder"),
         choosable=False)
