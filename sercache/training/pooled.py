"""A fold as utterance-level vectors: the input of pooled heads (``linear``, ``mlp``, ``svm``, ``logreg``).

Every stream a role names contributes one vector per utterance, read from the statistics stored
at extraction time (no frame is loaded): openSMILE streams give their functionals; every other
stream gives the mean and standard deviation over time of each chosen layer (``pooling="meanstd"``)
or the mean only (``"mean"``), layer after layer (``--layer 2,3,4``, ``all``: see
:mod:`sercache.training.roles`). A role naming several streams (``--audio-stream whisper,egemaps``)
concatenates their vectors. Every dimension is then standardised with training statistics alone,
so layers whose activations are hundreds of times larger than others' (whisper-base's layers 4
and 5 reach |x| ~ 460) weigh like any other; the statistics are computed in float64.

The fold is pooled once, when it is loaded, into one float32 tensor per role. Normalisation is
applied once to the whole tensor when it is set, so an epoch only slices rows: a batch costs one
index gather, whatever the batch size.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from sercache.heads.base import Batch, Head, PooledHead, StreamBatch
from sercache.splits.labels import LabelPreset
from sercache.store.reader import FeatureStore
from sercache.training.data import InMemoryData
from sercache.training.roles import DataError, RoleSpec

#: pooling -> stored statistics: owned by the pooled heads' base (a head may extend its own ``POOLINGS``).
POOLINGS = PooledHead.POOLINGS


def _stream_statistics(cache: FeatureStore, stream: str, layers: list[int], pooling: str,
                       utt_ids: list[str]) -> list[np.ndarray]:
    """One ``(n_utterances, width)`` block per layer: its mean (and std) over time; each field read once."""
    info = cache.streams[stream]
    if "functionals" in info.per_utterance_fields:
        return [cache.per_utterance(stream, "functionals", utt_ids).reshape(len(utt_ids), -1)]
    how = POOLINGS[pooling]
    stats = {h: cache.per_utterance(stream, f"pooled_{h}", utt_ids) for h in how}  # (n, pooled layers, dim)
    at = [info.pooled_layers.index(layer) for layer in layers]
    return [np.concatenate([stats[h][:, i].astype(np.float32) for h in how], axis=1) for i in at]


def _role_blocks(cache: FeatureStore, spec: RoleSpec, utt_ids: list[str],
                 pooling: str) -> tuple[np.ndarray, dict[tuple[str, int], slice]]:
    """A role's every stream and layer as one float32 matrix, and the columns of each ``(stream, layer)``."""
    parts, blocks, start = [], {}, 0
    for stream, layers in zip(spec.streams, spec.stream_layers()):
        for layer, block in zip(layers, _stream_statistics(cache, stream, layers, pooling, utt_ids)):
            parts.append(block)
            blocks[(stream, layer)] = slice(start, start + block.shape[1])
            start += block.shape[1]
    x = np.concatenate(parts, axis=1).astype(np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(f"stream(s) {spec.stream!r} hold NaN/inf statistics for {int(bad.sum())} utterances "
                        f"(e.g. {utt_ids[int(np.flatnonzero(bad)[0])]}); run `sercache cache verify {cache.path}`")
    return x, blocks


def utterance_vectors(cache: FeatureStore, spec: RoleSpec, utt_ids: list[str], pooling: str = "meanstd") -> np.ndarray:
    """``(n_utterances, dim)`` float32: each of the role's streams pooled (each of its layers), concatenated in order."""
    if pooling not in POOLINGS:
        raise DataError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
    return _role_blocks(cache, spec, utt_ids, pooling)[0]


class PooledData:
    """Every role of a set of utterances as ``(n_utterances, dim)`` tensors, with labels.

    It offers what the trainer uses of :class:`sercache.training.data.InMemoryData`
    (``batch``, ``indices``, ``length_of``, ``fit_normalization``, ``normalization``...); a batch
    holds each role as a one-"frame" sequence ``(batch, 1, dim)`` with a true mask, so pooled
    heads keep the common head contract.

    Every layer a role may read is loaded once; :meth:`use_layers` narrows what batches hold to
    one choice of layers (``--layer select`` tries each of :meth:`layer_choices`; a checkpoint
    records the one its head was trained on).
    """

    def __init__(self, cache: FeatureStore, table: pd.DataFrame, roles: dict[str, RoleSpec], preset: LabelPreset,
                 pooling: str = "meanstd", device: str | torch.device = "cpu") -> None:
        if pooling not in POOLINGS:
            raise DataError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
        self.device = torch.device(device)
        self.table = table.reset_index(drop=True)
        self.utt_ids = self.table.utt_id.tolist()
        self.position = {u: i for i, u in enumerate(self.utt_ids)}
        self.roles = roles
        self._all: dict[str, torch.Tensor] = {}
        self._blocks: dict[str, dict[tuple[str, int], slice]] = {}
        #: streams read as openSMILE functionals (no layers: logs name them alone)
        self.functionals = {st for spec in roles.values() for st in spec.streams
                            if "functionals" in cache.streams[st].per_utterance_fields}
        for role, spec in roles.items():
            x, self._blocks[role] = _role_blocks(cache, spec, self.utt_ids, pooling)
            self._all[role] = torch.from_numpy(x).to(self.device)
        self.y = torch.as_tensor(self.table.y.to_numpy(copy=True), dtype=torch.long, device=self.device)
        self.n_classes = len(preset.classes)
        self.soft = self.va = self.chars = self.char_lengths = None
        self.use_layers(None)

    # --------------------------------------------------------------- layer choice
    def layer_choices(self) -> list[dict[str, RoleSpec]]:
        """The fixed choices of layers a fold picks among on validation (``--layer select``); [] when fixed."""
        for role, spec in self.roles.items():
            if spec.select:
                return [{**self.roles, role: choice} for choice in spec.choices()]
        return []

    def use_layers(self, view: Mapping[str, RoleSpec | list] | None) -> None:
        """Batches hold only ``view``'s layers (role -> RoleSpec, or the layers a checkpoint recorded); None: all.

        The normalisation is reset: statistics belong to one choice of columns.
        """
        specs = {role: spec.choices()[-1] if spec.select else spec for role, spec in self.roles.items()}
        for role, chosen in (view or {}).items():
            layers = chosen.layers if isinstance(chosen, RoleSpec) else list(chosen)
            specs[role] = RoleSpec(role, self.roles[role].stream, layers)
        self._raw = {}
        for role, spec in specs.items():
            try:
                columns = [self._blocks[role][(stream, layer)] for stream, layers in
                           zip(spec.streams, spec.stream_layers()) for layer in layers]
            except KeyError:
                raise DataError(f"role {role!r} reads {spec.describe()}, and only {self.roles[role].describe()} was "
                                "loaded: the checkpoint does not belong to this run's features") from None
            index, every = torch.cat([torch.arange(c.start, c.stop) for c in columns]), self._all[role]
            whole = len(index) == every.shape[1] and torch.equal(index, torch.arange(len(index)))
            self._raw[role] = every if whole else every[:, index.to(self.device)]
        self.view = specs
        self.dims = {role: int(x.shape[1]) for role, x in self._raw.items()}
        self.normalization = None

    @property
    def layers_in_use(self) -> dict[str, list]:
        """Role -> the layers batches hold now, per stream (as RoleSpec.layers; recorded in checkpoints)."""
        return {role: spec.layers for role, spec in self.view.items()}

    def describe_layers(self) -> dict[str, str]:
        """Role -> ``whisper:3``-style words of the layers in use (metrics.json, logs, the report)."""
        return {role: spec.describe(self.functionals) for role, spec in self.view.items()}

    # --------------------------------------------------------------- normalisation
    def fit_normalization(self, idx: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-dimension mean and std over utterances ``idx`` (the training side only), shapes ``(1, dim)``.

        As scikit-learn's ``StandardScaler``: population std, and 1 where a dimension is constant
        on the training side (a constant would otherwise turn into huge values on unseen data).
        """
        sel = torch.as_tensor(idx, device=self.device)
        stats = {}
        for role, x in self._raw.items():
            part = x[sel].double()
            mean = part.mean(0, keepdim=True)
            std = part.std(0, unbiased=False, keepdim=True)
            std = torch.where(std < 1e-8 * mean.abs().clamp(min=1.0), torch.ones_like(std), std)
            stats[role] = (mean.float(), std.float())
        return stats

    @property
    def normalization(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        return self._normalization

    @normalization.setter
    def normalization(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """Setting statistics z-scores every utterance once (not per batch); None restores the raw vectors."""
        self._normalization = stats
        if stats is None:
            self._x = dict(self._raw)
            return
        self._x = {}
        for role, x in self._raw.items():
            mean, std = (t.to(self.device).reshape(1, -1) for t in stats[role])
            self._x[role] = (x - mean) / std

    # --------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.utt_ids)

    def indices(self, utt_ids: list[str]) -> np.ndarray:
        return np.array([self.position[u] for u in utt_ids], dtype=np.int64)

    def length_of(self, idx: np.ndarray) -> np.ndarray:
        """Every utterance is one vector: equal lengths, so length bucketing only shuffles."""
        return np.ones(len(idx), dtype=np.int64)

    def features(self, idx: np.ndarray, role: str) -> torch.Tensor:
        """``(len(idx), dim)`` normalised vectors of one role."""
        return self._x[role][torch.as_tensor(idx, device=self.device)]

    def batch(self, idx: np.ndarray) -> Batch:
        sel = torch.as_tensor(idx, device=self.device)
        mask = torch.ones(len(idx), 1, dtype=torch.bool, device=self.device)
        streams = {role: StreamBatch(x[sel].unsqueeze(1), mask) for role, x in self._x.items()}
        return Batch(streams, self.y[sel], utt_ids=[self.utt_ids[i] for i in idx])


def load_fold(cache: FeatureStore, table: pd.DataFrame, roles: dict[str, RoleSpec], preset: LabelPreset,
              head_cls: type[Head], hyperparameters: dict, device: str | torch.device = "cpu",
              needs: frozenset[str] | None = None) -> PooledData | InMemoryData:
    """The fold in the form the head reads: utterance vectors for pooled heads, frames for the others.

    ``needs``: the extra training targets to load (default: the head's; prediction needs none).
    """
    if issubclass(head_cls, PooledHead):  # the head says how its utterances are pooled
        return PooledData(cache, table, roles, preset, head_cls.pooling_of(hyperparameters), device)
    if head_cls.pooled_input:  # a pooled head not built on PooledHead (older code): the default pooling
        return PooledData(cache, table, roles, preset, hyperparameters.get("pooling", "meanstd"), device)
    return InMemoryData(cache, table, roles, preset, head_cls.needs if needs is None else needs, device)
