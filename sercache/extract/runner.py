"""Stage 1: corpus -> manifest -> frozen encoders -> resumable HDF5 cache.

Order of work, so that nothing is wasted on a request that cannot finish:

1. read the corpus (manifest, audio headers, checksums);
2. check every model config, layer and option (no weights loaded yet);
3. lock every target shard (one writer per shard; others refuse at once);
4. check what the cache already holds (same manifest? same provenance?);
5. extract stream by stream (in --streams order), each over every shard, resuming staged work.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sercache.corpora import get_corpus
from sercache.extract.audio_probe import probe_all
from sercache.extract.manifests import read_corpus
from sercache.extract.options import ExtractError, ExtractOptions, assign_shards, problem_shards
from sercache.extract.stream_job import ProgressHook, RunSettings, StreamJob, StreamRun, safe_extract
from sercache.features.base import Extractor
from sercache.features.models import model_bars
from sercache.features.streams import Runtime, build_extractor, get_stream, kind_of_identity, stream_kinds
from sercache.store.errors import CacheCorruptError, StaleCacheError
from sercache.store.layout import MODELS_DIR, check_name, list_shards, manifest_path, staging_dir, stream_path
from sercache.store.lock import ShardLock
from sercache.store.manifest import read_manifest, read_stream_index, register_streams, registered_streams, write_manifest
from sercache.store.ownership import refuse_foreign_files
from sercache.store.provenance import describe_difference, identity_of
from sercache.store.records import ExtractionProblem
from sercache.store.streamfile import H5_READ_ERRORS

log = logging.getLogger(__name__)

#: Manifest columns that, when changed, make stored features stale.
MANIFEST_IDENTITY = ("utt_id", "audio_sha1", "transcript")
__all__ = ["ExtractReport", "ShardJob", "StreamRun", "build_extractors", "run_extract", "safe_extract"]


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
    kinds = {opts.name_of(k): k for k in opts.streams}
    runtime = Runtime(device=device, batch_seconds=opts.batch_seconds, model_store=opts.out / MODELS_DIR)
    return {name: build_extractor(kinds[name], config, runtime)
            for name, config in opts.stream_configs(precision).items()}


def bound_kernel_cache() -> None:
    """Cap oneDNN's cache of compiled CPU kernels (unless the user set it).

    oneDNN compiles kernels per input shape and keeps up to 1024 of them; with one new shape per
    utterance length, a CPU extraction's resident memory crept up by ~300 MB until that cache
    filled. 64 entries keep memory flat for about 5% more time on a tiny model (less on real
    ones, whose compute dwarfs kernel creation). Must run before torch's first convolution.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")


def run_extract(opts: ExtractOptions, on_progress: ProgressHook | None = None) -> ExtractReport:
    """Run one extraction request end to end. Raises ExtractError/StaleCacheError before any work.

    Args:
        on_progress: told ``(shard, stream, done, total)`` for every shard and stream at the start, then
            after each batch (how a shard task reports to the process that started it).
    """
    # The corpus layout first, from file names alone: a wrong ROOT or --corpus is the commonest
    # mistake, and it is found in a moment, before torch and the models take their time.
    start = time.monotonic()
    manifest = _read_layout(opts)
    table = manifest.table.assign(shard=assign_shards(manifest.table, opts.shard, opts.corpus))
    table = table[table.shard != ""].reset_index(drop=True)
    if table.empty:
        raise ExtractError(f"no utterances to extract from {opts.root} (corpus {opts.corpus}, sessions "
                           f"{opts.sessions or 'all'}, shard {opts.shard or 'all'})"
                           + ("" if len(manifest.table) else f"; {layout_hint(opts.corpus, len(manifest.problems))}"))
    bound_kernel_cache()
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    extractors = build_extractors(opts, device, precision)  # model configs and layers: fail before probing the audio
    log.info("streams, in the order they run: %s (device %s, precision %s)", ", ".join(extractors), device, precision)
    table = probe_all(table, manifest.problems)  # headers and checksums of the utterances this run extracts
    log.info("read %s corpus %s: %d utterances, %d problems in %.1f s", opts.corpus, opts.root, len(manifest.table),
             len(manifest.problems), time.monotonic() - start)
    problems = _problems_by_shard(manifest.problems, table, opts.corpus)
    log.info("%d utterances in %d shard(s): %s", len(table), table.shard.nunique(), ", ".join(sorted(set(table.shard))))
    jobs = [ShardJob(opts, shard, rows.drop(columns="shard").reset_index(drop=True), problems.get(shard, []),
                     extractors) for shard, rows in table.groupby("shard", sort=True)]
    for job in jobs:
        job.check_name()
    report = ExtractReport(manifest_problems=len(manifest.problems),
                           manifest_errors=sum(p.severity == "error" for p in manifest.problems))
    # the user's own files in the way are refused before anything is written, --overwrite or not
    shards = [*list_shards(opts.out), *(job.shard for job in jobs)]
    refuse_foreign_files(opts.out, {shard: list(extractors) for shard in shards})
    opts.out.mkdir(parents=True, exist_ok=True)
    targets = {job.shard for job in jobs}
    with contextlib.ExitStack() as locks:
        for job in jobs:
            locks.enter_context(ShardLock(opts.out, job.shard))
        _check_disjoint(opts, jobs)
        for job in jobs:
            job.check_manifest()
            job.check_streams(targets)
        # Register every shard and stream before any work: an interruption at any point then shows
        # up in `cache verify` as unfinished streams, never as a smaller cache that looks whole.
        for job in jobs:
            job.register()
        for job in jobs:
            job.write_manifest()
        settings = RunSettings(opts.out, opts.overwrite, opts.strict, opts.progress, int(opts.flush_mb * (1 << 20)),
                               opts.flush_seconds, on_progress)
        for job in jobs:  # every shard's total first, so that a coordinator's bar knows the whole task
            for name in extractors:
                if on_progress is not None:
                    on_progress(job.shard, name, 0, len(job.rows))
        # Stream by stream, in --streams order, each over every shard: the first stream is finished
        # corpus-wide before a slow one starts, and each model is freed once its stream is done.
        with model_bars(opts.progress or all(get_stream(k).model_option is None for k in opts.streams)):
            for name, extractor in extractors.items():
                for job in jobs:
                    report.runs.append(job.run_stream(name, settings))
                extractor.close()
    return report


def layout_hint(corpus: str, skipped: int = 0) -> str:
    """What ``--corpus`` expects under ROOT (the corpus's declared layout), for a ROOT that holds none of it."""
    layout = get_corpus(corpus).layout
    hint = f"--corpus {corpus} expects " + (f"ROOT/{layout}" if layout and "/" in layout.split(" ")[0] else
                                            layout or "its release layout")
    if skipped:
        hint += f"; {skipped} file(s) there do not follow it (`sercache -v extract` names them)"
    return hint


def _read_layout(opts: ExtractOptions) -> Any:
    """The corpus's manifest from its file names and label files, audio not yet probed."""
    try:
        return read_corpus(opts.corpus, opts.root, opts.sessions, probe=False)
    except FileNotFoundError as exc:
        raise ExtractError(f"{exc}; {layout_hint(opts.corpus)}") from None


def manifest_attrs(opts: ExtractOptions) -> dict[str, Any]:
    return {"corpus": opts.corpus, "root": str(opts.root.resolve())}


# ---------------------------------------------------------------------- planning
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


def _check_disjoint(opts: ExtractOptions, jobs: list[ShardJob]) -> None:
    """Refuse to put an utterance into a second shard of the same cache (e.g. mixing --shard schemes)."""
    ours = {job.shard for job in jobs}
    for existing in list_shards(opts.out):
        if existing in ours:
            continue
        stored, _, _ = read_manifest(opts.out, existing)
        stored_ids = set(stored.utt_id)
        for job in jobs:
            common = stored_ids.intersection(job.rows.utt_id)
            if common:
                raise ExtractError(
                    f"{len(common)} utterances of shard {job.shard} (e.g. {sorted(common)[0]}) are already in shard "
                    f"{existing} of {opts.out}. Use the same --shard/--session scheme as before, or a new --out.")


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


# ---------------------------------------------------------------------- one shard
class ShardJob:
    """The work on one shard, as the sequence run_extract calls: check_name, check_manifest,
    check_streams, register, write_manifest, then run_stream for each stream. Nothing is written before register."""

    def __init__(self, opts: ExtractOptions, shard: str, rows: pd.DataFrame, problems: list[ExtractionProblem],
                 extractors: dict[str, Extractor]) -> None:
        self.opts, self.shard, self.rows, self.problems, self.extractors = opts, shard, rows, problems, extractors
        self.out = opts.out

    def check_name(self) -> None:
        """Shard names come from the manifest's sessions and become directories: never let one leave --out."""
        try:
            check_name(self.shard, "shard")
        except ValueError as exc:
            rows = self.rows
            sessions = sorted(set(rows.session.astype(str)))
            raise ExtractError(
                f"{exc}. It comes from session {sessions[0]!r} of utterance {rows.utt_id.iloc[0]} ({len(rows)} "
                f"utterances) in {self.opts.root}; a session becomes a directory inside {self.out}, so it may hold "
                "only letters, digits, '_', '.', '-'. Fix the manifest's session column.") from None

    def check_manifest(self) -> None:
        if not manifest_path(self.out, self.shard).exists():
            return
        stored, _, _ = read_manifest(self.out, self.shard)
        diff = _manifest_difference(stored, self.rows)
        if diff and not self.opts.overwrite:
            raise StaleCacheError(
                f"{manifest_path(self.out, self.shard)} was built from a different corpus state ({diff}). Its "
                "features may be stale: rerun with --overwrite to rebuild this shard, or extract into a new --out.")

    def check_streams(self, targets: set[str]) -> None:
        """Stored streams must have been made with the same settings, here and in the cache's other shards."""
        for name, extractor in self.extractors.items():
            final = stream_path(self.out, self.shard, name)
            if final.exists() and not self.opts.overwrite:
                diff = self._difference(final, extractor)
                if diff:
                    raise StaleCacheError(
                        f"{final} was written with other settings: {diff}. Use --overwrite to re-extract it, or keep "
                        f"both with --stream-name {extractor.kind if extractor.kind != 'text' else name}=NEW_NAME.")
            for other in list_shards(self.out):
                other_file = stream_path(self.out, other, name)
                if other in targets or not other_file.exists():  # shards of this run are checked above
                    continue
                diff = self._difference(other_file, extractor)
                if diff:
                    raise StaleCacheError(
                        f"stream {name!r} of shard {other} in {self.out} was made with other settings ({diff}); one "
                        f"stream name must mean one model setup across shards. Use --stream-name {name}=NEW_NAME, "
                        "or re-extract every shard with --overwrite.")
        for kind in self.opts.streams:
            needed = stream_kinds()[kind].needs
            if needed and needed not in self.opts.streams:
                source = self.opts.name_of(needed)
                if not stream_path(self.out, self.shard, source).exists():
                    raise ExtractError(f"{kind} reads the {needed} stream, but shard {self.shard} of {self.out} has "
                                       f"no finished {source!r} stream: add {needed} to --streams")

    @staticmethod
    def _difference(path: Any, extractor: Extractor) -> str:
        try:
            stored = identity_of(read_stream_index(path).attrs.get("provenance", {}))
        except H5_READ_ERRORS as exc:
            raise CacheCorruptError(f"{path} cannot be read ({str(exc).splitlines()[0]}): run `sercache cache verify`, "
                                    "then re-extract it with --overwrite (or move it away).") from exc
        kind = kind_of_identity(stored)
        return describe_difference(kind.completed(stored) if kind else stored, extractor.identity())

    def register(self) -> None:
        register_streams(self.out, self.shard, list(self.extractors), self.opts.command)

    def write_manifest(self) -> None:
        if manifest_path(self.out, self.shard).exists():
            stored, _, _ = read_manifest(self.out, self.shard)
            if _manifest_difference(stored, self.rows):  # only reachable with --overwrite (checked before)
                log.warning("%s: corpus changed; --overwrite discards this shard's stored streams", self.shard)
                # only what sercache recorded for this shard: a user's own file in the directory is kept
                for stream in registered_streams(self.out, self.shard):
                    stream_path(self.out, self.shard, stream).unlink(missing_ok=True)
                    shutil.rmtree(staging_dir(self.out, self.shard, stream), ignore_errors=True)
        # labels and other metadata may be refreshed
        write_manifest(self.out, self.shard, self.rows, self.problems, manifest_attrs(self.opts))

    def run_stream(self, name: str, settings: RunSettings) -> StreamRun:
        o = self.opts
        needed = stream_kinds()[{o.name_of(k): k for k in o.streams}[name]].needs
        return StreamJob(settings, self.shard, name, self.extractors[name], self.rows, self.problems,
                         o.name_of(needed) if needed else None).run()
