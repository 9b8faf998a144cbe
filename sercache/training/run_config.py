"""A run's configuration (``RUN/config.json``), typed: what ``sercache train`` resolved, and its records.

:class:`RunConfig` is written once by ``train`` (see ``run.plan_run``) and read back by resume,
report, eval, predict and ``train --config``. It round-trips to the same JSON: one key per field,
in field order, with ``protocol_default``, ``fold_warnings`` and ``threads_per_task`` left out where
a run has none (runs made before they existed). Reading refuses keys it does not know, naming the
key and the file, so a hand-edited or foreign config.json fails before anything trains on it. Only
JSON is ever read: nothing in a run directory can run code.

``RunConfig`` also reads as the mapping config.json holds (``config["protocol"]``), for code
written against ``sercache.load_run(run).config`` when it was a dict.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sercache._typing import Pathlike
from sercache.errors import SercacheError
from sercache.registry import MappingView
from sercache.store.atomic import read_json
from sercache.store.reader import FeatureStore
from sercache.training.roles import RecordedLayers, RoleSpec, resolve_roles
from sercache.training.train_config import TrainConfig

#: Keys of config.json that may differ when resuming a run (everything else must match).
#: tensorboard: logging only; fold_warnings: follow from the fold files, whose SHA-1s protocol_options holds.
RESUMABLE_KEYS = ("jobs", "command", "created", "fold_selection", "device", "seeds", "threads_per_task",
                  "protocol_default", "tensorboard", "fold_warnings")
#: Keys a run's config.json must hold for report, eval and predict to read it.
REQUIRED_KEYS = ("cache", "head", "hyperparameters", "train", "roles", "encoders", "labels", "protocol", "seeds")
#: Written only when set: a run has either protocol_default (no --protocol) or fold_warnings (--folds), or neither.
_OMITTED_WHEN_NONE = ("protocol_default", "fold_warnings", "threads_per_task")


class RunConfigError(SercacheError, ValueError):
    """A run's config.json that cannot be used (names the file and the key)."""


@dataclass(frozen=True)
class RunLabels:
    """The label preset a run trained on; ``classes`` in the order of the heads' outputs."""

    preset: str = ""
    classes: list[str] = field(default_factory=list)
    rule: str = ""  # the preset's mapping in words, for the report


@dataclass(frozen=True)
class RunConfig(MappingView):
    """Everything needed to rebuild a run, and the records of how it was made (see the module doc)."""

    cache: str = ""                                              # the cache directory, resolved
    head: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # the head's, every default filled in
    train: TrainConfig = field(default_factory=TrainConfig)
    roles: dict[str, RoleSpec] = field(default_factory=dict)     # role -> stream(s) and layers read
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> the streams' identity (provenance)
    labels: RunLabels = field(default_factory=RunLabels)
    protocol: str = ""
    protocol_options: dict[str, Any] = field(default_factory=dict)  # the protocol's own (fold files: path, SHA-1)
    protocol_default: str | None = None                          # no --protocol: the corpus's default, in words
    fold_warnings: list[str] | None = None                       # --folds: what the fold files' check found
    subset: str = "all"
    split_seed: int = 0
    text_source: str | None = None                               # asr | gold; None without a text role
    speaker_independent: bool = False
    n_utterances: int = 0
    dropped_utterances: int = 0                                  # cache utterances outside the preset's classes
    seeds: list[int] = field(default_factory=list)
    fold_selection: str = "all"                                  # the --fold of the last train call
    jobs: int = 1
    tensorboard: bool = False
    threads_per_task: int | None = None                          # fixed at creation, so a resume trains alike
    device: str = "auto"
    sercache_version: str = ""
    command: str = ""
    created: str = ""

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_dict(cls, data: Any, path: Pathlike | None = None) -> RunConfig:
        """The config of a parsed config.json. Keys left out take their defaults (:meth:`load` requires some)."""
        where = f"{path}: " if path is not None else ""
        if not isinstance(data, Mapping):
            raise RunConfigError(f"{where}expected a run's settings (a JSON object), found a {type(data).__name__}")
        problem = unknown_key(data, path)
        if problem:
            raise RunConfigError(problem)
        values = dict(data)
        if "train" in values:
            values["train"] = _train(values["train"], where)
        if "labels" in values:
            values["labels"] = _labels(values["labels"], where)
        if "roles" in values:
            values["roles"] = _roles(values["roles"], where)
        seeds = values.get("seeds", [])
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise RunConfigError(f"{where}seeds: expected a list of integers, found {seeds!r}")
        if not isinstance(values.get("head", ""), str):
            raise RunConfigError(f"{where}head: expected a head's name, found {values['head']!r}")
        if values.get("head"):
            _check_head(values["head"], where)
        return cls(**values)

    @classmethod
    def load(cls, path: Pathlike, fix: str = "It is written by `sercache train`; restore it or train again into a "
                                             "new --out.") -> RunConfig:
        """Read ``RUN/config.json``; a damaged, incomplete or unknown one is refused with its path."""
        data = read_json(path, "the run's settings", fix)
        missing = [k for k in REQUIRED_KEYS if k not in data] if isinstance(data, dict) else list(REQUIRED_KEYS)
        if missing:
            raise RunConfigError(f"{path} lacks {', '.join(missing)}: it was not written by this version of "
                                 "`sercache train`, or was edited. Train again into a new --out.")
        return cls.from_dict(data, path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of config.json (a deep copy: changing it leaves the config as it was)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _OMITTED_WHEN_NONE:
                continue
            if f.name in ("train", "labels"):
                value = asdict(value)
            elif f.name == "roles":
                value = {r: s.to_dict() for r, s in value.items()}
            out[f.name] = copy.deepcopy(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)

    # ------------------------------------------------------------------ derived
    @property
    def streams(self) -> list[str]:
        """Every cache stream the run reads, in role order (a pooled role reads several)."""
        return list(dict.fromkeys(name for spec in self.roles.values() for name in spec.streams))

    # ------------------------------------------------------------------ the mapping config.json holds
    def _mapping(self) -> dict[str, Any]:
        return self.to_dict()


#: Every key a run's config.json may hold.
RECORD_KEYS = frozenset(f.name for f in fields(RunConfig))


def unknown_key(data: Mapping[str, Any], path: Pathlike | None = None) -> str:
    """Why ``data`` is not a run's config.json (an unknown key, top level or in ``train``), or ""."""
    where = f"{path}: " if path is not None else ""
    unknown = sorted(set(data) - RECORD_KEYS)
    if unknown:
        return f"{where}unknown key {unknown[0]!r} in this run's config.json; valid keys: " + ", ".join(sorted(RECORD_KEYS))
    names = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(data.get("train") or {}) - set(names)) if isinstance(data.get("train"), Mapping) else []
    if unknown:
        return f"{where}unknown training setting {unknown[0]!r}; valid ones: " + ", ".join(names)
    return ""


def _check_head(name: str, where: str) -> None:
    """A recorded head must be one this sercache has: its name picks the class that rebuilds checkpoints."""
    from sercache.heads import HEADS, get_head

    try:
        get_head(name)
    except KeyError:
        raise RunConfigError(f"{where}head: {name[:60]!r} is not a sercache head (heads: {', '.join(sorted(HEADS))}); "
                             "this config.json was edited, or written by a sercache with other heads") from None


def _train(value: Any, where: str) -> TrainConfig:
    if not isinstance(value, Mapping):
        raise RunConfigError(f"{where}train: expected the training settings (a JSON object), found {value!r}")
    for f in fields(TrainConfig):
        if f.name in value:
            want, v = type(f.default), value[f.name]
            ok = isinstance(v, (int, float)) if want is float else isinstance(v, want)
            if not ok or (want is not bool and isinstance(v, bool)):
                raise RunConfigError(f"{where}train.{f.name}: {v!r} is not a {want.__name__}")
    return TrainConfig(**value)


def _labels(value: Any, where: str) -> RunLabels:
    known = {f.name for f in fields(RunLabels)}
    if not isinstance(value, Mapping) or set(value) - known:
        extra = sorted(set(value) - known) if isinstance(value, Mapping) else []
        raise RunConfigError(f"{where}labels: " + (f"unknown key {extra[0]!r}; valid keys: {', '.join(sorted(known))}"
                                                   if extra else f"expected an object, found {value!r}"))
    classes = value.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise RunConfigError(f"{where}labels.classes: expected a list of class names, found {classes!r}")
    return RunLabels(**value)


def _roles(value: Any, where: str) -> dict[str, RoleSpec]:
    if not isinstance(value, Mapping):
        raise RunConfigError(f"{where}roles: expected role -> {{stream, layers}}, found {value!r}")
    out = {}
    for role, spec in value.items():
        if (not isinstance(spec, Mapping) or not {"stream", "layers"} <= set(spec) <= {"stream", "layers", "select"}
                or not isinstance(spec["stream"], str) or not isinstance(spec["layers"], list)
                or not all(_layer_entry(v) for v in spec["layers"]) or not isinstance(spec.get("select", False), bool)):
            raise RunConfigError(f"{where}roles.{role}: expected {{\"stream\": NAME, \"layers\": [...]}} (and "
                                 f"\"select\": true where layers were chosen on validation), found {spec!r}")
        out[str(role)] = RoleSpec(str(role), spec["stream"], list(spec["layers"]), bool(spec.get("select", False)))
    return out


def _layer_entry(value: Any) -> bool:
    """A layer number (None: a stream without stored layers), or (a pooled role's stream) a list of them."""
    def number(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return value is None or number(value) or (isinstance(value, list) and bool(value) and all(map(number, value)))


def as_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """A RunConfig's JSON object; any other mapping (a recorded config.json) as it is."""
    return config.to_dict() if isinstance(config, RunConfig) else dict(config)


def settings_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The settings two run configs differ in (not the RESUMABLE_KEYS), down to the values; "" if none."""
    old, new = as_dict(old), as_dict(new)
    diff = [k for k in sorted(set(old) | set(new)) if k not in RESUMABLE_KEYS
            and json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str)]
    return "; ".join(describe_change(k, old.get(k), new.get(k)) for k in diff)


def describe_change(key: str, stored: Any, asked: Any, width: int = 80) -> str:
    """``train.lr: stored 1e-05, asked 0.001``: nested settings down to the values that differ."""
    if isinstance(stored, dict) and isinstance(asked, dict):
        keys = sorted(k for k in set(stored) | set(asked) if json.dumps(stored.get(k), sort_keys=True, default=str)
                      != json.dumps(asked.get(k), sort_keys=True, default=str))
        return "; ".join(describe_change(f"{key}.{k}", stored.get(k), asked.get(k), width) for k in keys)

    def short(value: Any) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= width else text[: width - 3] + "..."

    return f"{key}: stored {short(stored)}, asked {short(asked)}"


def recorded_roles(cache: FeatureStore, config: RunConfig) -> dict[str, RoleSpec]:
    """The roles a run's config.json recorded, checked against ``cache`` (streams and layers must exist)."""
    from sercache.heads import get_head

    head_cls = get_head(config.head)
    return resolve_roles(cache, head_cls.required_roles(config.hyperparameters), head_cls.multi_layer_roles,
                         {r: s.stream for r, s in config.roles.items()},
                         {r: RecordedLayers(tuple(s.layers), s.select) for r, s in config.roles.items()
                          if r not in head_cls.multi_layer_roles},
                         pooled=head_cls.pooled_input, mixes=head_cls.mixes_layers)
