"""``sercache cache info``, the store's part: what a cache holds, how it was made, and what went wrong."""
from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from sercache._typing import Pathlike
from sercache.store.layout import list_staging, list_stream_files, manifest_path, staging_dir
from sercache.store.reader import FeatureStore
from sercache.store.staging import read_staged


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def summarize(cache: FeatureStore) -> dict[str, Any]:
    """What an open cache holds, as plain data (JSON-serialisable): shards, streams, provenance, problems.

    Only what the store knows: reports on what a stream's fields mean (WER) are composed one level
    up, by :func:`sercache.features.cache_info.cache_summary`.
    """
    shards = []
    for shard in cache.shards:
        rows = cache.utterances[cache.utterances.shard == shard]
        files = list_stream_files(cache.path, shard)
        shards.append({
            "shard": shard, "utterances": len(rows), "hours": float(rows.duration_s.sum(skipna=True) / 3600),
            "finished_streams": sorted(files), "in_progress": list_staging(cache.path, shard),
            "bytes": sum(p.stat().st_size for p in files.values()) + manifest_path(cache.path, shard).stat().st_size,
        })
    streams = []
    for name, info in cache.streams.items():
        size = sum(list_stream_files(cache.path, s)[name].stat().st_size for s in info.shards)
        staged = [read_staged(staging_dir(cache.path, s, name)) for s in info.in_progress]
        ident = info.provenance.get("identity", {})
        streams.append({
            "stream": name, "kind": info.kind, "model": ident.get("model") or ident.get("feature_set", ""), "layers": info.layers,
            "pooled_layers": (f"{info.pooled_layers[0]}-{info.pooled_layers[-1]}" if info.pooled_layers else ""),
            "dim": info.dim, "dtype": info.dtype, "frame_rate": info.frame_rate, "stored": info.n_utterances,
            "failed": info.n_failed, "bytes": size, "complete": info.complete,
            "missing_shards": info.missing_shards, "in_progress": info.in_progress,
            # utterances already extracted in unfinished shards, waiting in .staging to be merged
            "staged": sum(len(w.done_ids) for w in staged), "staged_bytes": sum(w.nbytes for w in staged),
            "provenance": info.provenance, "inconsistent": info.inconsistent,
        })
    errors = cache.errors
    return {
        "path": str(cache.path), "utterances": len(cache.utterances), "shards": shards, "streams": streams,
        "errors": errors.to_dict("records"),
        "error_counts": (errors.groupby(["stream", "stage", "severity"]).size().rename("count").reset_index()
                         .to_dict("records") if len(errors) else []),
    }


def cache_summary(path: Pathlike) -> dict[str, Any]:
    """:func:`summarize` of the cache at ``path``. ``sercache cache info`` prints
    :func:`sercache.features.cache_info.cache_summary`, which adds the ASR streams' WER."""
    with FeatureStore(path) as cache:
        return summarize(cache)


def format_summary(summary: dict[str, Any], max_errors: int = 20, *, single_layer_kinds: Collection[str] = (),
                   sections: Sequence[str] = ()) -> str:
    """The human-readable report.

    Args:
        single_layer_kinds: stream kinds whose one feature "layer" (0) is no model layer: shown as "-".
        sections: lines placed between the streams and the problems (the feature reports).
    """
    return "\n".join([*overview_lines(summary, single_layer_kinds), *sections, *problem_lines(summary, max_errors)])


def overview_lines(summary: dict[str, Any], single_layer_kinds: Collection[str] = ()) -> list[str]:
    """The report's shards, streams and provenance."""
    out = [f"cache {summary['path']}: {summary['utterances']} utterances in {len(summary['shards'])} shard(s)", ""]
    shards = pd.DataFrame(summary["shards"])
    shards["hours"] = shards.hours.map(lambda h: f"{h:.2f}")
    shards["size"] = shards.pop("bytes").map(_size)
    shards["finished_streams"] = shards.finished_streams.map(lambda s: ",".join(s) or "-")
    shards["in_progress"] = shards.in_progress.map(lambda s: ",".join(s) or "-")
    out += ["shards:", shards.to_string(index=False), ""]
    if summary["streams"]:
        st = pd.DataFrame(summary["streams"])
        view = st[["stream", "kind", "model", "layers", "pooled_layers", "dim", "dtype", "frame_rate", "stored",
                   "failed", "complete"]].copy()
        view["size"] = st.bytes.map(_size)
        if st.staged.any():  # an extraction under way (or interrupted): what it has done so far
            view.insert(view.columns.get_loc("failed") + 1, "staged", st.staged)
        view["model"] = view.model.map(lambda m: m if len(m) <= 40 else "..." + m[-37:])
        single = view.kind.isin(list(single_layer_kinds))  # e.g. spectral streams: no layers to pick
        view["layers"] = [("-" if one else ",".join(map(str, x)) or "-") for x, one in zip(view.layers, single)]
        view["pooled_layers"] = [("-" if one else x or "-") for x, one in zip(view.pooled_layers, single)]
        view["dim"] = [("-" if d is None or d != d else str(int(d))) for d in st.dim]
        view["frame_rate"] = [("-" if r is None or r != r else f"{r:g}") for r in st.frame_rate]
        view["model"] = view.model.map(lambda m: m or "-")
        out += ["streams:", view.to_string(index=False), ""]
        for s in summary["streams"]:
            if not s["complete"]:
                out.append(f"  {s['stream']}: not finished in shard(s) {', '.join(s['missing_shards'])}"
                           + (f" (in progress: {', '.join(s['in_progress'])})" if s["in_progress"] else ""))
            if s["staged"]:
                out.append(f"  {s['stream']}: {s['staged']} more utterances extracted in unfinished shards "
                           f"({_size(s['staged_bytes'])}), staged until their shard finishes (rerun an interrupted "
                           "extraction to resume)")
            if s["inconsistent"]:
                out.append(f"  {s['stream']}: {s['inconsistent']}")
        out += ["provenance:"]
        for s in summary["streams"]:
            ident = s["provenance"].get("identity", {})
            details = s["provenance"].get("details", {})
            out.append(f"  {s['stream']}: " + ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                                        for k, v in ident.items()))
            if details:
                out.append("    " + ", ".join(f"{k}={v}" for k, v in details.items()))
        out.append("")
    return out


def problem_lines(summary: dict[str, Any], max_errors: int = 20) -> list[str]:
    """The report's problem counts and the first ``max_errors`` problems (-1: all)."""
    out = []
    errors = pd.DataFrame(summary["errors"])
    if len(errors):
        counts = pd.DataFrame(summary["error_counts"])
        out += [f"problems: {len(errors)} ({int((errors.severity == 'error').sum())} errors, "
                f"{int((errors.severity == 'warning').sum())} warnings)", counts.to_string(index=False), ""]
        cols = ["shard", "stream", "utt_id", "severity", "stage", "path", "line", "reason"]
        shown = errors[cols].head(max_errors) if max_errors >= 0 else errors[cols]
        out += [shown.to_string(index=False, max_colwidth=90)]
        if max_errors >= 0 and len(errors) > max_errors:
            out.append(f"... {len(errors) - max_errors} more (use --errors -1 to list all)")
    else:
        out.append("problems: none")
    return out
