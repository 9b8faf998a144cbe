"""Stage 1: corpus -> manifest -> frozen encoders -> resumable HDF5 cache.

Order of work, so that nothing is wasted on a request that cannot finish:

1. read the corpus (manifest, audio headers, checksums);
2. check every model config, layer and option (no weights loaded yet);
3. lock every target shard (one writer per shard; others refuse at once);
4. check what the cache already holds (same manifest? same provenance?);
5. extract stream by stream, shard by shard, resuming staged work.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from sercache.extract.batching import PlanItem, plan_batches
from sercache.extract.corpora import read_corpus
from sercache.extract.options import ExtractError, ExtractOptions, StrictStop, assign_shards, problem_shards
from sercache.features.audio import AudioError, load_audio, resampled_length
from sercache.features.base import AudioItem, Extractor, ExtractResult, TextItem
from sercache.store.errors import StaleCacheError
from sercache.store.layout import check_name, list_shards, manifest_path, staging_dir, stream_path
from sercache.store.lock import ShardLock
from sercache.store.manifest import read_manifest, read_stream_index, register_streams, registered_streams, write_manifest
from sercache.store.provenance import describe_difference, identity_of
from sercache.store.records import ExtractionProblem
from sercache.store.writer import StreamWriter

log = logging.getLogger(__name__)

#: Manifest columns that, when changed, make stored features stale.
MANIFEST_IDENTITY = ("utt_id", "audio_sha1", "transcript")


@dataclass
class StreamRun:
    shard: str
    stream: str
    status: str            # "extracted" | "already complete"
    stored: int = 0
    failed: int = 0
    warnings: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0


@dataclass
class ExtractReport:
    runs: list[StreamRun] = field(default_factory=list)
    manifest_problems: int = 0
    manifest_errors: int = 0

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.runs)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.runs])


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExtractError(f"--device {device}: no CUDA device is visible here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ExtractError(f"--device {device!r}: use cpu, cuda, cuda:N or auto")
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if precision == "fp16" and device == "cpu":
        raise ExtractError("--precision fp16 needs a GPU; on the CPU use fp32 (or bf16)")
    return precision


def build_extractors(opts: ExtractOptions, device: str, precision: str) -> dict[str, Extractor]:
    """Stream name -> extractor, checking every model config and layer spec (no weights loaded)."""
    from sercache.features.asr import CTCExtractor
    from sercache.features.opensmile import OPENSMILE_KINDS, OpenSmileExtractor
    from sercache.features.spectral import SPECTRAL_KINDS, SpectralExtractor
    from sercache.features.ssl import SSLExtractor
    from sercache.features.text import TextExtractor

    audio_kw = dict(device=device, precision=precision, batch_seconds=opts.batch_seconds,
                    chunk_seconds=opts.chunk_seconds, overlap_seconds=opts.chunk_overlap)
    out: dict[str, Extractor] = {}
    for kind in opts.streams:
        name = opts.name_of(kind)
        if kind == "ssl":
            out[name] = SSLExtractor(opts.ssl_model, opts.layers, dtype=opts.dtype, **audio_kw)
        elif kind == "asr":
            out[name] = CTCExtractor(opts.asr_model, **audio_kw)
        elif kind in ("text_asr", "text_gold"):
            out[name] = TextExtractor(opts.text_model, kind[5:], opts.text_layers, device=device, precision=precision,
                                      dtype=opts.dtype, batch_size=opts.text_batch_size)
        elif kind in SPECTRAL_KINDS:
            out[name] = SpectralExtractor(kind, n_mfcc=opts.n_mfcc)
        elif kind in OPENSMILE_KINDS:
            out[name] = OpenSmileExtractor(kind)  # raises ExtractError here when opensmile is missing
        else:
            raise ExtractError(f"stream kind {kind!r} has no extractor")
    return out


def bound_kernel_cache() -> None:
    """Cap oneDNN's cache of compiled CPU kernels (unless the user set it).

    oneDNN compiles kernels per input shape and keeps up to 1024 of them; with one new shape per
    utterance length, a CPU extraction's resident memory crept up by ~300 MB until that cache
    filled. 64 entries keep memory flat for about 5% more time on a tiny model (less on real
    ones, whose compute dwarfs kernel creation). Must run before torch's first convolution.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")


def run_extract(opts: ExtractOptions) -> ExtractReport:
    """Run one extraction request end to end. Raises ExtractError/StaleCacheError before any work."""
    bound_kernel_cache()
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    extractors = build_extractors(opts, device, precision)  # model configs and layers first: cheap, and fail fast
    manifest = read_corpus(opts.corpus, opts.root, opts.sessions)
    table = manifest.table.assign(shard=assign_shards(manifest.table, opts.shard, opts.corpus))
    table = table[table.shard != ""]
    if table.empty:
        raise ExtractError(f"no utterances to extract from {opts.root} (corpus {opts.corpus}, sessions "
                           f"{opts.sessions or 'all'}, shard {opts.shard or 'all'})")
    shards = {s: g.drop(columns="shard").reset_index(drop=True) for s, g in table.groupby("shard", sort=True)}
    _check_shard_names(opts, shards)
    problems = _problems_by_shard(manifest.problems, table, opts.corpus)
    report = ExtractReport(manifest_problems=len(manifest.problems),
                           manifest_errors=sum(p.severity == "error" for p in manifest.problems))
    opts.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as locks:
        for shard in shards:
            locks.enter_context(ShardLock(opts.out, shard))
        _check_disjoint(opts, shards)
        for shard, rows in shards.items():
            _check_manifest(opts, shard, rows)
            _check_streams(opts, shard, extractors, set(shards))
        # Register every shard and stream before any work: an interruption at any point then shows
        # up in `cache verify` as unfinished streams, never as a smaller cache that looks whole.
        for shard in shards:
            register_streams(opts.out, shard, list(extractors), opts.command)
        for shard, rows in shards.items():
            _ensure_manifest(opts, shard, rows, problems.get(shard, []), manifest_attrs(opts))
            for name, extractor in extractors.items():
                report.runs.append(_run_stream(opts, shard, name, extractor, rows, problems.get(shard, [])))
    for extractor in extractors.values():
        extractor.close()
    return report


def manifest_attrs(opts: ExtractOptions) -> dict[str, Any]:
    return {"corpus": opts.corpus, "root": str(opts.root.resolve())}


# ---------------------------------------------------------------------- checks before work
def _problems_by_shard(problems: list[ExtractionProblem], table: pd.DataFrame,
                       corpus: str | None = None) -> dict[str, list[ExtractionProblem]]:
    """Utterance problems go to the utterance's shard; file-level ones as the corpus says (the session they name)."""
    shard_of = dict(zip(table.utt_id, table.shard))
    names = sorted(set(table.shard))
    out: dict[str, list[ExtractionProblem]] = {s: [] for s in names}
    for p in problems:
        if p.utt_id in shard_of:
            out[shard_of[p.utt_id]].append(p)
        elif not p.utt_id or p.stage == "manifest":
            for s in problem_shards(corpus, p.path, names):
                out[s].append(p)
    return out


def _check_shard_names(opts: ExtractOptions, shards: dict[str, pd.DataFrame]) -> None:
    """Shard names come from the manifest's sessions and become directories: never let one leave --out."""
    for shard, rows in shards.items():
        try:
            check_name(shard, "shard")
        except ValueError as exc:
            sessions = sorted(set(rows.session.astype(str)))
            raise ExtractError(
                f"{exc}. It comes from session {sessions[0]!r} of utterance {rows.utt_id.iloc[0]} ({len(rows)} "
                f"utterances) in {opts.root}; a session becomes a directory inside {opts.out}, so it may hold only "
                "letters, digits, '_', '.', '-'. Fix the manifest's session column.") from None


def _check_disjoint(opts: ExtractOptions, shards: dict[str, pd.DataFrame]) -> None:
    """Refuse to put an utterance into a second shard of the same cache (e.g. mixing --shard schemes)."""
    for existing in list_shards(opts.out):
        if existing in shards:
            continue
        stored, _, _ = read_manifest(opts.out, existing)
        stored_ids = set(stored.utt_id)
        for shard, rows in shards.items():
            common = stored_ids.intersection(rows.utt_id)
            if common:
                raise ExtractError(
                    f"{len(common)} utterances of shard {shard} (e.g. {sorted(common)[0]}) are already in shard "
                    f"{existing} of {opts.out}. Use the same --shard/--session scheme as before, or a new --out.")


def _check_manifest(opts: ExtractOptions, shard: str, rows: pd.DataFrame) -> None:
    if not manifest_path(opts.out, shard).exists():
        return
    stored, _, _ = read_manifest(opts.out, shard)
    diff = _manifest_difference(stored, rows)
    if diff and not opts.overwrite:
        raise StaleCacheError(
            f"{manifest_path(opts.out, shard)} was built from a different corpus state ({diff}). Its features may "
            "be stale: rerun with --overwrite to rebuild this shard, or extract into a new --out.")


def _manifest_difference(stored: pd.DataFrame, rows: pd.DataFrame) -> str:
    a = stored.set_index("utt_id")
    b = rows.set_index("utt_id")
    gone, new = sorted(set(a.index) - set(b.index)), sorted(set(b.index) - set(a.index))
    if gone or new:
        return f"{len(gone)} utterances gone (e.g. {gone[:1]}), {len(new)} new (e.g. {new[:1]})"
    for col in MANIFEST_IDENTITY[1:]:
        changed = a[col].astype(str) != b.loc[a.index, col].astype(str)
        if changed.any():
            return f"{col} changed for {int(changed.sum())} utterances (e.g. {changed[changed].index[0]})"
    return ""


def _check_streams(opts: ExtractOptions, shard: str, extractors: dict[str, Extractor], targets: set[str]) -> None:
    for name, extractor in extractors.items():
        final = stream_path(opts.out, shard, name)
        if final.exists() and not opts.overwrite:
            stored = read_stream_index(final).attrs.get("provenance", {})
            diff = describe_difference(identity_of(stored), extractor.identity())
            if diff:
                raise StaleCacheError(
                    f"{final} was written with other settings: {diff}. Use --overwrite to re-extract it, or keep "
                    f"both with --stream-name {extractor.kind if extractor.kind != 'text' else name}=NEW_NAME.")
        # the same stream name must mean the same settings in every shard of the cache
        for other in list_shards(opts.out):
            other_file = stream_path(opts.out, other, name)
            if other in targets or not other_file.exists():  # shards of this run are checked above
                continue
            stored = read_stream_index(other_file).attrs.get("provenance", {})
            diff = describe_difference(identity_of(stored), extractor.identity())
            if diff:
                raise StaleCacheError(
                    f"stream {name!r} of shard {other} in {opts.out} was made with other settings ({diff}); one "
                    f"stream name must mean one model setup across shards. Use --stream-name {name}=NEW_NAME, or "
                    f"re-extract every shard with --overwrite.")
    if "text_asr" in opts.streams and "asr" not in opts.streams:
        asr_name = opts.name_of("asr")
        if not stream_path(opts.out, shard, asr_name).exists():
            raise ExtractError(f"text_asr encodes the ASR transcripts, but shard {shard} of {opts.out} has no finished "
                               f"{asr_name!r} stream: add asr to --streams")


def _ensure_manifest(opts: ExtractOptions, shard: str, rows: pd.DataFrame, problems: list[ExtractionProblem],
                     attrs: dict[str, Any]) -> None:
    path = manifest_path(opts.out, shard)
    if path.exists():
        stored, _, _ = read_manifest(opts.out, shard)
        if _manifest_difference(stored, rows):  # only reachable with --overwrite (checked before)
            log.warning("%s: corpus changed; --overwrite discards this shard's stored streams", shard)
            # only what sercache recorded for this shard: a user's own file in the directory is kept
            for stream in registered_streams(opts.out, shard):
                stream_path(opts.out, shard, stream).unlink(missing_ok=True)
                shutil.rmtree(staging_dir(opts.out, shard, stream), ignore_errors=True)
    write_manifest(opts.out, shard, rows, problems, attrs)  # labels and other metadata may be refreshed


# ---------------------------------------------------------------------- one stream of one shard
def _run_stream(opts: ExtractOptions, shard: str, name: str, extractor: Extractor, rows: pd.DataFrame,
                manifest_problems: list[ExtractionProblem]) -> StreamRun:
    final = stream_path(opts.out, shard, name)
    if final.exists() and not opts.overwrite:
        leftover = staging_dir(opts.out, shard, name)
        if leftover.exists():
            shutil.rmtree(leftover)  # a finished compaction's leftovers, or an abandoned --overwrite
        index = read_stream_index(final)
        log.info("%s/%s: already complete (%d stored)", shard, name, len(index.utt_ids))
        return StreamRun(shard, name, "already complete", len(index.utt_ids),
                         int((index.problems.severity == "error").sum()))
    writer = StreamWriter(opts.out, shard, name, extractor.provenance(), rows.utt_id.tolist(),
                          overwrite=opts.overwrite, flush_bytes=int(opts.flush_mb * (1 << 20)),
                          flush_seconds=opts.flush_seconds)
    run = StreamRun(shard, name, "extracted")
    start = time.monotonic()
    try:
        if extractor.input == "audio":
            _run_audio(opts, shard, name, extractor, rows, manifest_problems, writer, run)
        else:
            _run_text(opts, shard, name, extractor, rows, writer, run)
    except BaseException:
        with contextlib.suppress(Exception):  # Ctrl-C or a crash: keep every finished batch
            writer.flush()
        raise
    path = writer.finalize(extractor.stream_attrs())
    index = read_stream_index(path)
    run.stored = len(index.utt_ids)
    run.failed = int((index.problems.severity == "error").sum())
    run.warnings = int((index.problems.severity == "warning").sum())
    run.seconds = time.monotonic() - start
    if run.failed:
        log.warning("%s/%s: %d utterances failed; `sercache cache info %s` lists them", shard, name, run.failed, opts.out)
    return run


def _record(writer: StreamWriter, problem: ExtractionProblem, strict: bool) -> None:
    """Record a problem; under --strict an error stops the run (finished batches are kept)."""
    writer.add_problem(problem)
    if strict and problem.severity == "error":
        raise StrictStop(f"--strict: {problem.utt_id} ({problem.path}) failed in {problem.stage}: {problem.reason}. "
                           "Finished batches are kept; fix the input, or rerun without --strict to record and skip it.")


def _safe_extract(extractor: Extractor, items: list[Any], strict: bool) -> ExtractResult:
    """One batch; a failure is retried utterance by utterance, then recorded (never fatal unless --strict)."""
    try:
        return extractor.extract(items)
    except Exception as exc:  # noqa: BLE001 - recorded per utterance with its reason
        if len(items) > 1:
            merged = ExtractResult()
            for it in items:
                one = _safe_extract(extractor, [it], strict)
                merged.records += one.records
                merged.problems += one.problems
            return merged
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
        if "out of memory" in reason.lower():
            reason += " (lower --chunk-seconds or --batch-seconds)"
        log.warning("%s failed in %s: %s", items[0].utt_id, extractor.kind, reason)
        log.debug("traceback", exc_info=True)
        return ExtractResult(problems=[ExtractionProblem(items[0].utt_id, items[0].path, extractor.kind, reason)])


def _progress(opts: ExtractOptions, shard: str, name: str, total: int) -> tqdm:
    return tqdm(total=total, desc=f"{shard}/{name}", unit="utt", disable=not opts.progress, dynamic_ncols=True,
                mininterval=0.5, smoothing=0.1)


def _run_audio(opts: ExtractOptions, shard: str, name: str, extractor: Extractor, rows: pd.DataFrame,
               manifest_problems: list[ExtractionProblem], writer: StreamWriter, run: StreamRun) -> None:
    remaining = set(writer.remaining_ids)
    unreadable = {p.utt_id: p for p in manifest_problems if p.stage == "audio" and p.severity == "error"}
    todo = rows[rows.utt_id.isin(remaining)]
    items = []
    for r in todo.itertuples(index=False):
        if r.utt_id in unreadable:
            _record(writer, unreadable[r.utt_id], opts.strict)
            continue
        items.append(PlanItem(r.utt_id, resampled_length(int(r.num_samples), int(r.sample_rate)), float(r.duration_s)))
    by_id = rows.set_index("utt_id")
    batches = plan_batches(items, extractor.batch_policy())

    def load(batch: list[PlanItem]) -> tuple[list[AudioItem], list[ExtractionProblem]]:
        good, bad = [], []
        for it in batch:
            row = by_id.loc[it.utt_id]
            try:
                audio = load_audio(row.path)
            except AudioError as exc:
                bad.append(ExtractionProblem(it.utt_id, row.path, "audio", str(exc)))
                continue
            if any(n.startswith("silent") for n in audio.notes):
                bad.append(ExtractionProblem(it.utt_id, row.path, "audio", "silent audio (all samples are zero)",
                                             severity="warning"))
            bad.extend(ExtractionProblem(it.utt_id, row.path, "audio", n, severity="warning")
                       for n in audio.notes if n.startswith("truncated"))
            good.append(AudioItem(it.utt_id, row.path, audio.samples, row.transcript))
        return good, bad

    with _progress(opts, shard, name, len(items)) as bar, ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        pending: Future | None = pool.submit(load, batches[0]) if batches else None
        for b, batch in enumerate(batches):
            good, bad = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(load, batches[b + 1]) if b + 1 < len(batches) else None  # decode ahead
            for p in bad:
                _record(writer, p, opts.strict)
            result = _safe_extract(extractor, good, opts.strict) if good else ExtractResult()
            for record in result.records:
                writer.add(record)
            for p in result.problems:
                _record(writer, p, opts.strict)
            writer.end_batch()
            run.audio_seconds += sum(it.seconds for it in batch)
            bar.update(len(batch))
            bar.set_postfix_str(f"{run.audio_seconds / max(time.monotonic() - start, 1e-9):.1f} audio-s/s", refresh=False)


def _run_text(opts: ExtractOptions, shard: str, name: str, extractor: Extractor, rows: pd.DataFrame,
              writer: StreamWriter, run: StreamRun) -> None:
    source = extractor.source
    remaining = writer.remaining_ids
    by_id = rows.set_index("utt_id")
    texts: dict[str, str] = {}
    if source == "gold":
        for u in remaining:
            t = str(by_id.loc[u, "transcript"])
            if t.strip():
                texts[u] = t
            else:
                _record(writer, ExtractionProblem(u, str(by_id.loc[u, "path"]), "text", "no gold transcript"),
                        opts.strict)
    else:
        asr_file = stream_path(opts.out, shard, opts.name_of("asr"))
        import h5py

        with h5py.File(asr_file, "r", locking=False) as f:
            ids = f["utt_ids"].asstr()[()].tolist()
            hyp = dict(zip(ids, f["per_utterance/text"].asstr()[()].tolist())) if ids else {}
        failed = read_stream_index(asr_file).problems.set_index("utt_id")
        for u in remaining:
            if u in hyp:
                texts[u] = hyp[u]
            else:
                why = failed.loc[u, "reason"] if u in failed.index else "not in the asr stream"
                why = why.iloc[0] if isinstance(why, pd.Series) else why
                _record(writer, ExtractionProblem(u, str(by_id.loc[u, "path"]), "text", f"no ASR transcript ({why})"),
                        opts.strict)
    items = [PlanItem(u, len(t), 0.0) for u, t in texts.items()]
    batches = plan_batches(items, extractor.batch_policy())
    with _progress(opts, shard, name, len(items)) as bar:
        for batch in batches:
            result = _safe_extract(extractor, [TextItem(it.utt_id, str(by_id.loc[it.utt_id, "path"]), texts[it.utt_id])
                                               for it in batch], opts.strict)
            for record in result.records:
                writer.add(record)
            for p in result.problems:
                _record(writer, p, opts.strict)
            writer.end_batch()
            bar.update(len(batch))
