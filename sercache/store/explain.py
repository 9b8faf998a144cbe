"""Why a read cannot be served: the reader's lookups, each failure naming its cause and its fix."""
from __future__ import annotations

from sercache.store.catalog import Catalog, StreamInfo
from sercache.store.errors import CacheError, CacheKeyError, IncompleteStreamError


def checked_stream(catalog: Catalog, stream: str, *, finished: bool = True) -> StreamInfo:
    """``stream``'s info; raises if it is unknown, (with ``finished``) not finished anywhere, or inconsistent."""
    if stream not in catalog.streams:
        raise CacheKeyError(f"no stream {stream!r} in {catalog.path}; streams here: {sorted(catalog.streams) or 'none'}")
    info = catalog.streams[stream]
    if finished and not info.shards:  # staged work only: no layer or field can be read yet
        raise IncompleteStreamError(
            f"stream {stream!r} is not finished in any shard of {catalog.path} (in progress: "
            f"{', '.join(info.in_progress) or 'none'}). Rerun the extract command to resume it.")
    if info.inconsistent:
        raise CacheError(info.inconsistent + ". Re-extract the odd shard with the same settings (--overwrite), "
                         "or use a different --stream-name for the other model.")
    return info


def frame_field(info: StreamInfo, layer: int | None, name: str | None) -> str:
    """The ragged dataset to read: ``name`` if given, else ``layer_<layer>`` (default: the last stored layer)."""
    stream = info.name
    if name is not None:
        if name not in info.frame_fields:
            raise CacheKeyError(f"stream {stream!r} has no frame field {name!r}; fields: {info.frame_fields}")
        return name
    if not info.layers:
        raise CacheKeyError(f"stream {stream!r} ({info.kind}) stores no feature layers; fields: {info.frame_fields}")
    layer = info.default_layer if layer is None else int(layer)
    if layer not in info.layers:
        hint = (f"; pooled statistics exist for layers {info.pooled_layers} (use .pooled)"
                if layer in info.pooled_layers else "")
        raise CacheKeyError(f"layer {layer} is not stored frame-by-frame in stream {stream!r} (stored: {info.layers})"
                            f"{hint}; re-extract with --layers {layer} (and --overwrite or a new --stream-name)")
    return f"layer_{layer}"


def missing_utterance(catalog: Catalog, stream: str, utt_id: str) -> Exception:
    """The error for ``utt_id`` absent from ``stream``: unknown id, unfinished shard, or the recorded failure."""
    row = catalog.utterances.loc[catalog.utterances.utt_id == utt_id]
    if row.empty:
        return KeyError(f"unknown utterance id {utt_id!r} in {catalog.path}")
    shard = row.shard.iloc[0]
    info = catalog.streams[stream]
    if shard not in info.shards:
        return IncompleteStreamError(
            f"{utt_id}: shard {shard} has no finished {stream!r} stream"
            f"{' (extraction in progress or interrupted)' if shard in info.in_progress else ''}. "
            f"Run `sercache extract ... --out {catalog.path}` for that shard to finish it.")
    errors = catalog.errors
    err = errors[(errors.utt_id == utt_id) & (errors.stream.isin(["", stream]))]
    # the error that kept it out of this stream, not an earlier manifest-level warning about it
    err = err.sort_values("severity", key=lambda s: s != "error", kind="stable")
    reason = err.reason.iloc[0] if len(err) else "not stored"
    return IncompleteStreamError(f"{utt_id} has no {stream!r} features: {reason} (see `sercache cache info`)")
