"""A fold as utterance-level vectors: the input of pooled heads (``linear``, ``mlp``, ``svm``, ``logreg``).

Every stream a role names contributes one vector per utterance, read from the statistics stored
at extraction time (no frame is loaded): openSMILE streams give their functionals; every other
stream gives the mean and standard deviation over time of the chosen layer (``pooling="meanstd"``)
or the mean only (``"mean"``). A role naming several streams (``--audio-stream mfcc,logmel,egemaps``)
concatenates their vectors.

The fold is pooled once, when it is loaded, into one float32 tensor per role. Normalisation is
applied once to the whole tensor when it is set, so an epoch only slices rows: a batch costs one
index gather, whatever the batch size.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sercache.splits.labels import LabelPreset
from sercache.store.reader import FeatureStore
from sercache.train_heads.data import DataError, InMemoryData, RoleSpec
from sercache.train_heads.heads.base import Batch, Head, StreamBatch

POOLINGS = ("meanstd", "mean")


def utterance_vectors(cache: FeatureStore, spec: RoleSpec, utt_ids: list[str], pooling: str = "meanstd") -> np.ndarray:
    """``(n_utterances, dim)`` float32: each of the role's streams pooled, concatenated in order."""
    if pooling not in POOLINGS:
        raise DataError(f"pooling={pooling!r}: use one of {', '.join(POOLINGS)}")
    parts = []
    for stream, layer in zip(spec.streams, spec.layers):
        info = cache.streams[stream]
        if "functionals" in info.per_utterance_fields:
            parts.append(cache.per_utterance(stream, "functionals", utt_ids).reshape(len(utt_ids), -1))
        else:
            parts.append(cache.pooled(stream, layer, pooling, utt_ids))
    x = np.concatenate(parts, axis=1).astype(np.float32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(f"stream(s) {spec.stream!r} hold NaN/inf statistics for {int(bad.sum())} utterances "
                        f"(e.g. {utt_ids[int(np.flatnonzero(bad)[0])]}); run `sercache cache verify {cache.path}`")
    return x


class PooledData:
    """Every role of a set of utterances as ``(n_utterances, dim)`` tensors, with labels.

    It offers what the trainer uses of :class:`sercache.train_heads.data.InMemoryData`
    (``batch``, ``indices``, ``length_of``, ``fit_normalization``, ``normalization``...); a batch
    holds each role as a one-"frame" sequence ``(batch, 1, dim)`` with a true mask, so pooled
    heads keep the common head contract.
    """

    def __init__(self, cache: FeatureStore, table: pd.DataFrame, roles: dict[str, RoleSpec], preset: LabelPreset,
                 pooling: str = "meanstd", device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.table = table.reset_index(drop=True)
        self.utt_ids = self.table.utt_id.tolist()
        self.position = {u: i for i, u in enumerate(self.utt_ids)}
        self.roles = roles
        self._raw = {role: torch.from_numpy(utterance_vectors(cache, spec, self.utt_ids, pooling)).to(self.device)
                     for role, spec in roles.items()}
        self._x = dict(self._raw)
        self.dims = {role: int(x.shape[1]) for role, x in self._raw.items()}
        self.y = torch.as_tensor(self.table.y.to_numpy(copy=True), dtype=torch.long, device=self.device)
        self.n_classes = len(preset.classes)
        self.soft = self.va = self.chars = self.char_lengths = None
        self._normalization: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

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
    if head_cls.pooled_input:
        return PooledData(cache, table, roles, preset, hyperparameters.get("pooling", "meanstd"), device)
    return InMemoryData(cache, table, roles, preset, head_cls.needs if needs is None else needs, device)
