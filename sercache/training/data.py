"""A run's features in memory: each stream loaded once into one flat tensor, batched by index.

Loading a stream is one ``FeatureStore.load`` call (contiguous reads, checksums verified),
after which every epoch only gathers rows: no HDF5 access happens inside the training loop.
On a GPU the flat tensors live on the device, so batches are gathered there too. Frames stay
in their storage dtype (fp16) until a batch is gathered and cast to float32.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from sercache.heads.base import Batch, StreamBatch
from sercache.splits.labels import LabelPreset, apply_preset
from sercache.store.errors import CacheCorruptError
from sercache.store.reader import FeatureStore
from sercache.training.roles import DataError, RoleSpec
from sercache.training.targets import extra_targets

#: Frame normalisation: statistics leave out values beyond this many standard deviations, and z-scores are
#: clipped there (see InMemoryData.fit_normalization).
Z_LIMIT = 5.0


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


def label_summary(cache: FeatureStore, preset: LabelPreset, roles: dict[str, RoleSpec]) -> str:
    """One line: the preset, its classes, and how many utterances training leaves out, and why.

    E.g. ``labels: emodb4 (angry, happy, neutral, sad); 339 of 535 utterances used, 196 dropped: labels
    outside the preset (boredom 81, disgust 46, fear 69)``.
    """
    everything = cache.utterances
    mapped = apply_preset(everything, preset)
    used = labelled_utterances(cache, preset, roles)
    line = (f"labels: {preset.name} ({', '.join(preset.classes)}); {len(used)} of {len(everything)} utterances used")
    reasons = []
    outside = everything[~everything.utt_id.isin(set(mapped.utt_id))]
    if len(outside):
        counts = outside.label.astype(str).value_counts().sort_index()
        reasons.append("labels outside the preset (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    if len(mapped) > len(used):
        reasons.append(f"{len(mapped) - len(used)} not stored in every stream read")
    dropped = len(everything) - len(used)
    if dropped:
        line += f", {dropped} dropped: " + "; ".join(reasons) + " (--labels: another preset, see `sercache labels`)"
    return line


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
        targets = extra_targets(self.table, preset, needs)

        def on_device(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(a).to(self.device)

        self.soft, self.va = on_device(targets.soft), on_device(targets.va)
        self.chars, self.char_lengths = on_device(targets.chars), on_device(targets.char_lengths)
        self.normalization: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        #: z-scores are clipped at +-z_limit (None: not clipped, as in checkpoints from before the limit)
        self.z_limit: float | None = Z_LIMIT

    def clip(self, z: torch.Tensor) -> torch.Tensor:
        """z-scores clipped at ``+-z_limit`` (see :meth:`fit_normalization`)."""
        return z if self.z_limit is None else z.clamp(-self.z_limit, self.z_limit)

    def _frames_of(self, role: str, idx: np.ndarray, chunk: int) -> Iterator[torch.Tensor]:
        """The real frames of utterances ``idx``, ``chunk`` utterances at a time, as float64 ``(layers, frames, dim)``."""
        frames = self._frames[role]
        for start in range(0, len(idx), chunk):
            part = idx[start:start + chunk]
            lengths = torch.as_tensor(self.lengths[role][part], device=self.device)
            steps = torch.arange(int(lengths.max()) if len(part) else 0, device=self.device)
            mask = steps[None, :] < lengths[:, None]
            rows = (self._starts[role][torch.as_tensor(part, device=self.device)][:, None] + steps[None, :])[mask]
            yield frames[:, rows].double()  # fp16 storage: squares of |x| > 256 would overflow in fp16

    def fit_normalization(self, idx: np.ndarray, chunk: int = 256) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-dimension mean and std of every role (per layer) over the frames of utterances ``idx``, outliers aside.

        Fit on the training utterances only, so nothing of the validation or test set leaks in. Two
        passes in float64: the plain mean and std, then both again over the values within
        :data:`Z_LIMIT` standard deviations of that mean (sigma clipping). Real encoders have massive
        activations: whisper-base's layers 4 and 5 reach |x| ~ 480 in one to three dimensions, on one
        frame (mostly the sixth from the end) of one EmoDB clip in ten to one in five; those dimensions'
        other values have a std of about 1, which the spikes would inflate six-fold, squashing them all.
        :meth:`batch` then clips z-scores at ``+-Z_LIMIT``, so such a frame cannot dominate an attention
        or a max-pool. On Gaussian-like features neither step changes anything (a value beyond 5 std has
        probability 6e-7); on whisper-base's EmoDB features 0.03 % of layer 4-5 values are clipped.
        Returns ``{role: (mean, std)}`` with shapes ``(layers, dim)``.
        """
        stats = {}
        for role, frames in self._frames.items():
            shape = (frames.shape[0], frames.shape[2])
            total = torch.zeros(shape, dtype=torch.float64, device=self.device)
            squares, count = total.clone(), 0
            for x in self._frames_of(role, idx, chunk):
                total += x.sum(1)
                squares += (x * x).sum(1)
                count += x.shape[1]
            mean = total / max(count, 1)
            std = (squares / max(count, 1) - mean * mean).clamp(min=0).sqrt()
            if self.z_limit is not None:  # again without the values beyond z_limit std
                total, squares, kept = total.zero_(), squares.zero_(), torch.zeros_like(total)
                for x in self._frames_of(role, idx, chunk):
                    inside = ((x - mean[:, None]).abs() <= self.z_limit * std[:, None]).double()
                    total += (x * inside).sum(1)
                    squares += (x * x * inside).sum(1)
                    kept += inside.sum(1)
                mean = total / kept.clamp(min=1)
                std = (squares / kept.clamp(min=1) - mean * mean).clamp(min=0).sqrt()
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
                # in place, the same operations: one copy of the batch, not four (a long recording's
                # frames at predict time are one batch)
                x.sub_(mean[:, None, None, :]).div_(std[:, None, None, :])
                if self.z_limit is not None:
                    x.clamp_(-self.z_limit, self.z_limit)
                x.mul_(mask[None, :, :, None])
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
