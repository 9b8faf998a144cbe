"""``sercache train --config FILE``: the train options from a YAML or JSON file, or a run's own config.json.

Two kinds of file are read:

* a hand-written file: its keys are the train options' long names (``batch_size`` or ``batch-size``,
  ``labels``, ``folds``, ``set``...), plus an optional ``train:`` mapping for optimisation settings the
  command line has no option for (``schedule``, ``gamma``, ``grad_clip``...: :class:`TrainConfig`'s fields).
  ``set`` is a mapping (``set: {dropout: 0.2}``) or a list of ``KEY=VALUE`` strings. Records of a run
  (``created``, ``command``, ``encoders``...) make no sense there and are refused like unknown keys.
* a run's ``config.json`` (recognised by its ``sercache_version`` key): its resolved settings are mapped
  back to the options that reproduce the run (every hyperparameter and training setting spelled out, the
  protocol chosen explicitly), and its records (``created``, ``command``, ``encoders``, ``n_utterances``,
  ``threads_per_task``...) are accepted and not used.

Relative paths in a file are taken from the current directory, as on the command line. Options given
on the command line override the file; one that contradicts other values of the file drops them too
(see :meth:`TrainFile.overridden_by`).
"""
from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sercache.errors import SercacheError
from sercache.head_catalog import stream_roles
from sercache.splits.registry import RoutingError, cli_options, recorded_options, refuse_unused_fraction, route, unread_params
from sercache.training.roles import RecordedLayers
from sercache.training.run import OPTIMISER_SETTINGS, RunError, TrainRequest, head_roles
from sercache.training.run_config import RECORD_KEYS, RunConfig, RunConfigError, unknown_key
from sercache.training.train_config import TrainConfig

#: File key -> the train command's parameter name. Every train option but --config itself.
OPTION_KEYS: dict[str, str] = {
    "cache": "cache_dir", "head": "head", "set": "settings", "labels": "label_preset", "subset": "subset",
    "text": "text", **{r.param: r.param for r in stream_roles().values()},  # --audio-stream...: one per stream role
    "layer": "layer", "text_layer": "text_layer", "fold": "fold",
    "protocol": "protocol", **{o.flag[2:].replace("-", "_"): o.param for o in cli_options()}, "split_seed": "split_seed",
    "epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "patience": "patience",
    "weight_decay": "weight_decay", "optimizer": "optimizer", "precision": "precision", "normalize": "normalize",
    "refit": "refit",
    "seeds": "seeds", "out": "out", "jobs": "jobs", "device": "device", "tensorboard": "tensorboard",
    "progress_every": "progress_every", "no_progress": "no_progress"}
#: TrainConfig fields that have their own option (the others come from a file's ``train:`` only).
TRAIN_OPTIONS = (*OPTIMISER_SETTINGS, "normalize", "refit")
#: RECORD_KEYS: the keys of a run's config.json (run_config.RunConfig's fields), mapped back to options or not used.
#: Stream option of each role, and the layer option of the roles that have one.
ROLE_STREAM = {r.name: r.param for r in stream_roles().values()}
ROLE_LAYER = {"audio": "layer", "text": "text_layer"}
#: An option given on the command line also drops these values of the file, which would contradict it.
DROPS = {"protocol": ("fold_file",), "fold_file": ("protocol",), "valid": ("valid_speakers",),
         "valid_speakers": ("valid",), "text": ("text_stream", "text_layer"), "text_stream": ("text", "text_layer"),
         "audio_stream": ("layer",)}


#: A ``set`` key: a hyperparameter's name.
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigFileError(RunError):
    """A --config file that cannot be used (names the file, the key and what is valid)."""


@dataclass(frozen=True)
class TrainFile:
    """What a --config file sets."""

    path: Path
    #: parameter name -> value as the command line would give it (``settings``: ``KEY=VALUE`` strings)
    options: dict[str, Any] = field(default_factory=dict)
    #: TrainConfig fields with no option (from ``train:``, or all of a run's recorded ones)
    train: dict[str, Any] = field(default_factory=dict)
    #: role -> recorded layers that no --layer expresses (several pooled streams; mfcc, text_aug)
    layers: dict[str, RecordedLayers] = field(default_factory=dict)
    record: bool = False  # a run's config.json
    recorded: dict[str, Any] | None = None  # that config.json, to show how a replay differs from it

    def overridden_by(self, given: Mapping[str, Any]) -> TrainFile:
        """The file's values that still apply once the options in ``given`` (name -> value) are set.

        Besides the options themselves: --folds and --protocol replace each other, --valid and
        --valid-speakers too; a stream option drops the file's layer for that role (and --text the
        text stream). A run's hyperparameters and training settings belong to its head: another
        --head drops them, so that head's defaults apply.
        """
        options, train, layers = dict(self.options), dict(self.train), dict(self.layers)
        for name in given:
            for dropped in (name, *DROPS.get(name, ())):
                options.pop(dropped, None)
        for role, stream in ROLE_STREAM.items():
            if stream in given or (role == "text" and "text" in given):
                layers.pop(role, None)
        if "protocol" in given or "fold_file" in given:  # the file's options of its own protocol (--ratios...) go
            for name in unread_params(given.get("protocol"), given.get("fold_file")):
                if name not in given:
                    options.pop(name, None)
        if self.record and "head" in given and given["head"] != self.options.get("head"):
            train = {}
            for name in ("settings", *TRAIN_OPTIONS):
                options.pop(name, None)
            # the recorded streams of roles the other head does not read (gate's text, for logreg) are not asked for
            reads = _roles_read(given["head"], given.get("settings") or ())
            for role, stream in ROLE_STREAM.items():
                if role not in reads:
                    layers.pop(role, None)
                    for name in (stream, ROLE_LAYER.get(role), "text" if role == "text" else None):
                        options.pop(name, None)
        return replace(self, options=options, train=train, layers=layers)

    def file_only(self, head: str) -> dict[str, Any]:
        """Settings of ``train`` the command line cannot give and that differ from ``head``'s defaults."""
        if not self.train:
            return {}
        defaults = TrainConfig.for_head(head, {})
        return {k: v for k, v in self.train.items() if getattr(defaults, k) != v}


def _roles_read(head: str, settings: Any) -> tuple[str, ...]:
    """The roles ``head`` reads with the ``--set KEY=VALUE`` words given."""
    asked = dict(item.split("=", 1) for item in settings if "=" in item)
    return head_roles(head, {k.strip(): parse_value(v.strip()) for k, v in asked.items()})


def load_train_file(path: Path | str) -> TrainFile:
    """Read ``path`` (``.json``: JSON; otherwise YAML) into the train options it sets."""
    path = Path(path)
    data = _read(path)
    if "sercache_version" in data:
        return _from_record(path, data)
    options: dict[str, Any] = {}
    train: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in seen:
            raise ConfigFileError(f"{path}: {short(key)} and {short(seen[name])} are the same option; give it once")
        seen[name] = str(key)
        if name == "train":
            train = _train_section(path, value)
        elif name == "set":
            options["settings"] = settings_words(path, value)
        elif name in OPTION_KEYS:  # lists where the command line takes a comma list (ratios, streams, fold)
            options[OPTION_KEYS[name]] = ",".join(map(str, value)) if isinstance(value, list) else value
        else:
            why = (" (a record of a run's config.json: a hand-written file gives options)" if name in RECORD_KEYS
                   else "")
            raise ConfigFileError(f"{path}: unknown key {short(key)}{why}; valid keys: "
                                  + ", ".join(sorted([*OPTION_KEYS, "train"])))
    for name in TRAIN_OPTIONS:  # train: {lr: ...} is the option lr
        if name in train:
            if name in options:
                raise ConfigFileError(f"{path}: {name} is given twice (as {name!r} and in 'train'); give it once")
            options[name] = train.pop(name)
    return TrainFile(path, options, train)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"--config {path}: cannot be read ({exc})") from None
    try:
        data = _parse(path, text)
    except RecursionError:  # both parsers recurse once per level: a hostile file must not end in a traceback
        raise ConfigFileError(f"--config {path}: nested too deeply to read; a config file holds option names "
                              "and plain values (lr: 3e-4, set: {dropout: 0.2})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config {path}: expected a mapping of option names to values (lr: 3e-4), "
                              f"found a {type(data).__name__}")
    return data


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigFileError(f"--config {path} is not valid JSON ({exc})") from None
    import yaml

    try:
        return yaml.load(text, Loader=_config_loader())  # noqa: S506 - a SafeLoader: no aliases, no duplicate keys
    except _AliasRefused as exc:
        raise ConfigFileError(f"--config {path}: line {exc.line}: YAML anchors and aliases (&name, *name) are not "
                              "accepted in a config file (a few of them can expand a small file into gigabytes); "
                              "write each value out") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"--config {path} is not valid YAML ({exc})") from None


class _AliasRefused(SercacheError):
    """An anchor or alias in a config file (``line``: where, counting from 1)."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _config_loader() -> type:
    """PyYAML's SafeLoader, refusing anchors and aliases, and a key given twice (PyYAML keeps the last).

    An alias is a reference: loading keeps it small, but anything that walks the values (serialising
    ``set``, an error message) expands it, and ten nested aliases reach gigabytes ("billion laughs").
    Refused while composing, before any value is built.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise _AliasRefused(event.start_mark.line + 1)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {short(key)} is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return ConfigLoader


def parse_value(text: str) -> Any:
    """A --set value: JSON where it parses (numbers, true/false, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def settings_words(path: Path, value: Any) -> tuple[str, ...]:
    """A file's ``set`` (mapping, or list of KEY=VALUE) as --set words that parse back to the same values.

    The names are checked before any value is serialised, and an error shows a value shortened.
    """
    if isinstance(value, Mapping):
        bad = next((k for k in value if not isinstance(k, str) or not SETTING_NAME.fullmatch(k)), None)
        if bad is not None:
            raise ConfigFileError(f"{path}: set: {short(bad)} is not a hyperparameter name (letters, digits and _; "
                                  "see `sercache heads` for each head's)")
        return tuple(f"{k}={v if isinstance(v, str) and parse_value(v) == v else json.dumps(v)}"
                     for k, v in value.items())
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return tuple(value)
    found = (f"a list whose entry {short(next(v for v in value if not isinstance(v, str) or '=' not in v))} is not "
             "KEY=VALUE") if isinstance(value, list) else f"a {type(value).__name__}"
    raise ConfigFileError(f"{path}: set: give a mapping (set: {{dropout: 0.2}}) or a list of KEY=VALUE strings, "
                          f"found {found}")


def short(value: Any) -> str:
    """``repr(value)``, cut short (a value from a file can be as large as the file)."""
    shorten = reprlib.Repr()
    shorten.maxstring = shorten.maxother = 60
    text = shorten.repr(value)  # (integers are not shortened before Python 3.12)
    return text if len(text) <= 80 else text[:60] + "..."


def _train_section(path: Path, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigFileError(f"{path}: train: give a mapping of training settings (train: {{schedule: step}})")
    types = {f.name: type(f.default) for f in fields(TrainConfig)}
    out = {}
    for key, v in value.items():
        if key not in types:
            raise ConfigFileError(f"{path}: unknown key {short(f'train.{key}')}; valid keys: {', '.join(types)}")
        want = types[key]
        if want is float and isinstance(v, str):  # YAML reads 1e-4 (no dot) as text
            try:
                v = float(v)
            except ValueError:
                pass
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigFileError(f"{path}: train.{key}: {short(v)} is not a {want.__name__}")
        out[key] = v
    return out


def _from_record(path: Path, cfg: dict[str, Any]) -> TrainFile:
    """A run's config.json -> the options that reproduce that run."""
    from sercache.heads import get_head

    problem = unknown_key(cfg, path)  # top level and train: the keys a RunConfig has
    if problem:
        raise ConfigFileError(problem)
    missing = [k for k in ("cache", "head", "hyperparameters", "train", "roles", "labels", "protocol",
                           "protocol_options", "subset", "split_seed", "seeds", "fold_selection") if k not in cfg]
    if missing:
        raise ConfigFileError(f"{path}: a run's config.json without {', '.join(map(repr, missing))}; it is "
                              "damaged or not a sercache run")
    try:
        rec = RunConfig.from_dict(cfg, path)
        head = get_head(rec.head)
    except RunConfigError as exc:
        raise ConfigFileError(str(exc)) from None
    except KeyError as exc:
        raise ConfigFileError(f"{path}: head: {exc.args[0]}") from None
    o: dict[str, Any] = {
        "cache_dir": rec.cache, "head": rec.head, "settings": settings_words(path, rec.hyperparameters),
        "label_preset": rec.labels.preset, "subset": rec.subset, "split_seed": rec.split_seed,
        "fold": rec.fold_selection, "seeds": max(rec.seeds) + 1,
        **{k: rec[k] for k in ("jobs", "device", "tensorboard") if k in cfg}}
    if "text" in rec.roles:  # a head without a text role names no text source (it would be refused)
        o["text"] = rec.text_source or "asr"
    train = dict(cfg["train"])  # as recorded: only the settings it holds (hand-made records may hold a few)
    # closed-form heads take none of the optimiser's settings (recorded as the base defaults, lr 0 among them)
    for name in ("normalize", "refit") if head.closed_form else TRAIN_OPTIONS:
        if name in train:
            o[name] = train.pop(name)
    layers: dict[str, RecordedLayers] = {}
    for role, spec in rec.roles.items():
        if role not in ROLE_STREAM:
            raise ConfigFileError(f"{path}: roles: unknown role {role!r}; roles: {', '.join(ROLE_STREAM)}")
        o[ROLE_STREAM[role]] = spec.stream
        if role in head.multi_layer_roles:  # every stored layer, resolved again
            continue
        if role in ROLE_LAYER and spec.select:  # the candidates are every pooled layer, resolved again
            o[ROLE_LAYER[role]] = "select"
        elif role in ROLE_LAYER and len(spec.layers) == 1:  # one stream: its layer(s) as --layer writes them
            o[ROLE_LAYER[role]] = ",".join(map(str, spec.stream_layers()[0]))
        else:
            layers[role] = RecordedLayers(tuple(spec.layers))
    o.update(recorded_options(cfg["protocol"], cfg["protocol_options"]))  # folds: its path; session, ratios...
    return TrainFile(path, o, train, layers, record=True, recorded=cfg)


def request_from_options(o: Mapping[str, Any], file: TrainFile | None = None, command: str = "") -> TrainRequest:
    """The :class:`TrainRequest` of the train command's options (parameter name -> value), ``file``'s extras added."""
    if o.get("cache_dir") is None:
        raise RunError("no CACHE: give the cache directory (sercache train CACHE --head ...), or cache: in --config")
    if not o.get("head"):
        raise RunError("no --head: give one (see `sercache heads`), or head: in --config")
    hyper = {}
    for item in o["settings"]:
        if "=" not in item:
            raise RunError(f"--set {item!r}: use KEY=VALUE, e.g. --set dropout=0.2")
        k, v = item.split("=", 1)
        hyper[k.strip()] = parse_value(v.strip())
    try:  # None: the corpus's default, chosen with the cache
        if file is None or not file.record:  # a replayed record holds the default fraction beside valid: group
            refuse_unused_fraction(o)
        protocol, options = route(o)
    except RoutingError as exc:
        raise RunError(str(exc)) from None
    streams = {role: o[name] for role, name in ROLE_STREAM.items() if o.get(name)}
    layers: dict[str, Any] = {"audio": o["layer"], "text": o["text_layer"]}
    for role, recorded in (file.layers if file else {}).items():
        if layers.get(role) is None:
            layers[role] = recorded
    train = {**(file.train if file else {}), **{k: o[k] for k in TRAIN_OPTIONS}}
    return TrainRequest(
        cache=Path(o["cache_dir"]), head=o["head"], out=o["out"], fold=str(o["fold"]), protocol=protocol,
        protocol_options=options, folds=o["fold_file"], labels=o["label_preset"], subset=o["subset"], text=o["text"],
        streams=streams, layers=layers, seeds=o["seeds"], jobs=o["jobs"], hyperparameters=hyper,
        split_seed=o["split_seed"], train=train, progress_every=None if o["no_progress"] else o["progress_every"],
        device=o["device"], tensorboard=bool(o.get("tensorboard")), command=command,
        recorded=file.recorded if file is not None else None)
