"""A run's features in memory: each stream loaded once into one flat tensor, batched by index.

Loading a stream is one ``FeatureStore.load`` call (contiguous reads, checksums verified),
after which every epoch only gathers rows: no HDF5 access happens inside the training loop.
On a GPU the flat tensors live on the device, so batches are gathered there too. Frames stay
in their storage dtype (fp16) until a batch is gathered and cast to float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from sercache.splits.labels import LabelPreset, apply_preset, soft_labels
from sercache.store.errors import CacheCorruptError
from sercache.store.reader import FeatureStore, StreamInfo
from sercache.train_heads.head_catalog import role_default_streams
from sercache.train_heads.heads.base import CHAR_VOCAB, Batch, StreamBatch

if TYPE_CHECKING:
    from sercache.train_heads.run_config import RunConfig

#: Which cache stream a role reads when the user does not say (declared by the head modules: STREAM_ROLES).
ROLE_DEFAULT_STREAMS = role_default_streams()


class DataError(ValueError):
    """The cache cannot feed this head as asked (missing stream, layer...)."""


@dataclass
class RoleSpec:
    role: str
    stream: str        # one stream name; for a pooled role, several joined by commas ("mfcc,logmel,egemaps")
    layers: list[int]  # one layer, every stored layer (multi-layer roles), or one per stream (pooled roles)

    @property
    def streams(self) -> list[str]:
        return self.stream.split(",")

    def to_dict(self) -> dict:
        return {"stream": self.stream, "layers": self.layers}


def _stream_info(cache: FeatureStore, role: str, name: str | None) -> StreamInfo:
    if name is None or name not in cache.streams:
        raise DataError(f"the head reads a {role!r} stream, and stream {name!r} is not in {cache.path} "
                        f"(streams: {', '.join(cache.streams) or 'none'}); choose one with --{role}-stream")
    info = cache.streams[name]
    if not info.complete:
        raise DataError(f"stream {name!r} is not finished in shard(s) {', '.join(info.missing_shards)} of "
                        f"{cache.path}: finish the extraction first (rerun the extract command)")
    return info


def _pooled_layer(info: StreamInfo, role: str, layer: int | None) -> int:
    """The layer whose utterance statistics a pooled role reads (any pooled layer, stored frame by frame or not)."""
    if "functionals" in info.per_utterance_fields:
        return info.pooled_layers[-1] if info.pooled_layers else 0
    if not info.pooled_layers:
        raise DataError(f"stream {info.name!r} ({info.kind}) has no utterance-level statistics, so a pooled head "
                        f"cannot read it; choose a feature stream with --{role}-stream")
    if layer is None:
        return info.default_layer if info.default_layer in info.pooled_layers else info.pooled_layers[-1]
    if layer not in info.pooled_layers:
        raise DataError(f"{layer_option(role)} {layer}: stream {info.name!r} has pooled statistics of layers "
                        f"{info.pooled_layers}")
    return int(layer)


def layer_option(role: str) -> str:
    """The train option that picks ``role``'s layer (``--layer`` for audio, ``--text-layer`` for text)."""
    return "--layer" if role == "audio" else f"--{role}-layer"


def resolve_roles(cache: FeatureStore, roles: tuple[str, ...], multi_layer: tuple[str, ...],
                  streams: dict[str, str], layers: dict[str, int | list[int] | None],
                  pooled: bool = False) -> dict[str, RoleSpec]:
    """Map the head's roles to cache streams and layers, with errors that list what exists.

    A pooled head (``pooled=True``) reads utterance statistics, and one role may then name several
    streams (``"mfcc,logmel,egemaps"``) whose statistics are concatenated; ``layers`` may give one
    layer per stream (as recorded in a run's config).
    """
    out = {}
    for role in roles:
        names = (streams.get(role) or ROLE_DEFAULT_STREAMS.get(role) or "").split(",")
        names = [n.strip() for n in names if n.strip()] or [None]
        if len(names) > 1 and not pooled:
            raise DataError(f"--{role}-stream {','.join(map(str, names))}: only pooled heads (linear, mlp, svm, "
                            "logreg) read several streams at once; give one stream")
        infos = [_stream_info(cache, role, n) for n in names]
        asked = layers.get(role)
        if pooled:
            if isinstance(asked, list):
                per_stream = asked
            elif asked is not None and len(infos) > 1:
                raise DataError(f"{layer_option(role)} {asked}: with several {role} streams each uses its default layer; "
                                "give one stream to choose a layer")
            else:
                per_stream = [asked] * len(infos)
            out[role] = RoleSpec(role, ",".join(i.name for i in infos),
                                 [_pooled_layer(i, role, lay) for i, lay in zip(infos, per_stream)])
            continue
        info, name = infos[0], infos[0].name
        if role in multi_layer:
            if len(info.layers) < 2:
                raise DataError(f"this head weights several layers, but stream {name!r} stores only {info.layers}; "
                                "re-extract with --layers all (or e.g. --layers 0,6,12,24)")
            chosen = list(info.layers)
        else:
            layer = asked[0] if isinstance(asked, list) else asked
            if layer is not None and layer not in info.layers:
                raise DataError(f"{layer_option(role)} {layer}: stream {name!r} stores layers {info.layers} frame by frame")
            chosen = [info.default_layer if layer is None else int(layer)]
        out[role] = RoleSpec(role, name, chosen)
    return out


def recorded_roles(cache: FeatureStore, config: RunConfig) -> dict[str, RoleSpec]:
    """The roles a run's config.json recorded, checked against ``cache`` (streams and layers must exist)."""
    from sercache.train_heads.heads import get_head

    head_cls = get_head(config.head)
    return resolve_roles(cache, head_cls.required_roles(config.hyperparameters), head_cls.multi_layer_roles,
                         {r: s.stream for r, s in config.roles.items()},
                         {r: s.layers for r, s in config.roles.items() if r not in head_cls.multi_layer_roles},
                         pooled=head_cls.pooled_input)


def labelled_utterances(cache: FeatureStore, preset: LabelPreset, roles: dict[str, RoleSpec]) -> pd.DataFrame:
    """Manifest rows the preset labels and every role's stream holds (others are reported, not used)."""
    table = apply_preset(cache.utterances, preset)
    if table.empty:
        codes = sorted(cache.utterances.label.unique())[:12]
        raise DataError(f"label preset {preset.name!r} maps none of this cache's labels ({codes}); pick another "
                        "--labels (see `sercache labels`)")
    have = set(table.utt_id)
    for spec in roles.values():
        for stream in spec.streams:
            have &= set(cache.utt_ids(stream))
    return table[table.utt_id.isin(have)].reset_index(drop=True)


def _chars(text: object) -> list[int]:
    """Gold transcript -> CHAR_VOCAB ids (missing transcripts give no targets)."""
    if not isinstance(text, str):
        return []
    index = {c: i for i, c in enumerate(CHAR_VOCAB)}
    return [index[c] for c in " ".join(text.upper().split()) if c in index]


def _all_finite(frames: np.ndarray, rows: int = 1 << 16) -> bool:
    """np.isfinite(frames).all() in slices, without a boolean copy of the whole fold."""
    return all(np.isfinite(frames[a:a + rows]).all() for a in range(0, len(frames), rows))


class InMemoryData:
    """Every needed stream and target of a set of utterances, resident in memory (or on the GPU).

    Args:
        cache: the open cache.
        table: rows with ``utt_id`` and ``y`` (from :func:`labelled_utterances`).
        roles: role -> stream and layers.
        preset: for soft labels.
        needs: extra targets the head uses: ``"soft"``, ``"va"``, ``"chars"``.
        device: where tensors live.
    """

    def __init__(self, cache: FeatureStore, table: pd.DataFrame, roles: dict[str, RoleSpec], preset: LabelPreset,
                 needs: frozenset[str] = frozenset(), device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.table = table.reset_index(drop=True)
        self.utt_ids = self.table.utt_id.tolist()
        self.position = {u: i for i, u in enumerate(self.utt_ids)}
        self.roles = roles
        self.dims: dict[str, int] = {}
        self._frames: dict[str, torch.Tensor] = {}   # role -> (layers, total + 1, dim): last row is zero padding
        self._starts: dict[str, torch.Tensor] = {}
        self.lengths: dict[str, np.ndarray] = {}
        for role, spec in roles.items():
            # Each layer is read straight into its slice of one preallocated block, so the fold is
            # held once (plus a zero row for padding), never copied while being assembled.
            total = int(cache.frame_counts(spec.stream, self.utt_ids).sum())
            info = cache.streams[spec.stream]
            if info.dim is None:  # no feature layers: load() raises the error that says what is stored
                cache.load(spec.stream, [], layer=spec.layers[0])
            block = np.empty((len(spec.layers), total + 1, info.dim), dtype=np.dtype(info.dtype))
            block[:, total] = 0
            for i, layer in enumerate(spec.layers):
                frames, offsets = cache.load(spec.stream, self.utt_ids, layer=layer, verify=True, out=block[i, :total])
                if frames.dtype.kind == "f" and not _all_finite(frames):
                    raise CacheCorruptError(f"stream {spec.stream!r} layer {layer} holds NaN/inf values; run "
                                            f"`sercache cache verify {cache.path}` and re-extract what it names")
            self._frames[role] = torch.from_numpy(block).to(self.device)
            self._starts[role] = torch.from_numpy(offsets[:-1]).to(self.device)
            self.lengths[role] = np.diff(offsets)
            self.dims[role] = int(info.dim)
        self.y = torch.as_tensor(self.table.y.to_numpy(copy=True), dtype=torch.long, device=self.device)
        self.n_classes = len(preset.classes)
        self.soft = self.va = self.chars = self.char_lengths = None
        if "soft" in needs:
            self.soft = torch.from_numpy(soft_labels(self.table.votes, preset, self.table.y.to_numpy())).to(self.device)
        if "va" in needs:
            va = self.table[["valence", "arousal"]].to_numpy(np.float64)
            lo, hi = np.nanmin(va, axis=0), np.nanmax(va, axis=0)
            scaled = (va - lo) / np.where(hi > lo, hi - lo, 1.0)  # the corpus's own range -> [0, 1]
            self.va = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
            self.va_range = (lo.tolist(), hi.tolist())
        if "chars" in needs:
            seqs = [_chars(t) for t in self.table.transcript]
            width = max([len(s) for s in seqs] + [1])
            chars = np.zeros((len(seqs), width), dtype=np.int64)
            for i, s in enumerate(seqs):
                chars[i, : len(s)] = s
            self.chars = torch.from_numpy(chars).to(self.device)
            self.char_lengths = torch.as_tensor([len(s) for s in seqs], dtype=torch.long, device=self.device)

        self.normalization: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def fit_normalization(self, idx: np.ndarray, chunk: int = 256) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-dimension mean and std of every role (per layer) over the frames of utterances ``idx``.

        Fit on the training utterances only, so nothing of the validation or test set leaks in.
        Returns ``{role: (mean, std)}`` with shapes ``(layers, dim)``.
        """
        stats = {}
        for role, frames in self._frames.items():
            total = torch.zeros(frames.shape[0], frames.shape[2], dtype=torch.float64, device=self.device)
            squares, count = total.clone(), 0
            for start in range(0, len(idx), chunk):
                part = idx[start:start + chunk]
                lengths = torch.as_tensor(self.lengths[role][part], device=self.device)
                steps = torch.arange(int(lengths.max()) if len(part) else 0, device=self.device)
                mask = steps[None, :] < lengths[:, None]
                rows = (self._starts[role][torch.as_tensor(part, device=self.device)][:, None] + steps[None, :])[mask]
                x = frames[:, rows].double()
                total += x.sum(1)
                squares += (x * x).sum(1)
                count += rows.numel()
            mean = total / max(count, 1)
            std = (squares / max(count, 1) - mean * mean).clamp(min=0).sqrt()
            stats[role] = (mean.float(), std.float().clamp(min=1e-5))
        return stats

    def __len__(self) -> int:
        return len(self.utt_ids)

    def indices(self, utt_ids: list[str]) -> np.ndarray:
        return np.array([self.position[u] for u in utt_ids], dtype=np.int64)

    def length_of(self, idx: np.ndarray) -> np.ndarray:
        """Sort key for bucketing: the longest role's frame count per utterance."""
        return np.max(np.stack([self.lengths[r][idx] for r in self.roles]), axis=0)

    def batch(self, idx: np.ndarray) -> Batch:
        """Gather utterances ``idx`` into padded float32 tensors on the data's device."""
        sel = torch.as_tensor(idx, device=self.device)
        streams = {}
        for role, frames in self._frames.items():
            lengths = torch.as_tensor(self.lengths[role][idx], device=self.device)
            width = int(lengths.max()) if len(idx) else 0
            steps = torch.arange(width, device=self.device)
            mask = steps[None, :] < lengths[:, None]
            rows = torch.where(mask, self._starts[role][sel][:, None] + steps[None, :], frames.shape[1] - 1)
            x = frames[:, rows].float()  # (layers, batch, frames, dim)
            if self.normalization is not None:  # z-score with training statistics; padding stays zero
                mean, std = (t.to(self.device) for t in self.normalization[role])
                x = (x - mean[:, None, None, :]) / std[:, None, None, :] * mask[None, :, :, None]
            x = x[0] if len(self.roles[role].layers) == 1 else x.permute(1, 0, 2, 3)
            streams[role] = StreamBatch(x, mask)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[sel]

        return Batch(streams, self.y[sel], pick(self.soft), pick(self.va), pick(self.chars), pick(self.char_lengths),
                     [self.utt_ids[i] for i in idx])


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   pool: int = 50) -> list[np.ndarray]:
    """Batches of similar length: shuffle, sort within pools of ``pool * batch_size``, shuffle batches.

    With ``rng=None`` the order is deterministic and length-sorted (evaluation).
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    batches = []
    for start in range(0, n, pool * batch_size):
        chunk = order[start:start + pool * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
