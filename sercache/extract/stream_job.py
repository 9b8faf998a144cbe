"""One stream of one shard: resume its staged work, feed its extractor batch by batch, finalize it.

The shard's work (sercache.extract.runner.ShardJob) makes one StreamJob per stream; what a job
needs is given once, at construction, so the batch loops read it from ``self``.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from sercache.extract.batching import PlanItem, plan_batches
from sercache.extract.options import StrictStop
from sercache.features.audio import AudioError, load_audio, resampled_length
from sercache.features.base import AudioItem, Extractor, ExtractResult, TextItem
from sercache.interrupts import stop_if_interrupted
from sercache.store.layout import remove_staging, staging_dir, stream_path
from sercache.store.manifest import read_stream_field, read_stream_index
from sercache.store.records import ExtractionProblem
from sercache.store.writer import StreamWriter

log = logging.getLogger(__name__)


#: ``(shard, stream, done, total)``: utterances of the shard done in the stream (stored or recorded as failed).
ProgressHook = Callable[[str, str, int, int], None]


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


@dataclass(frozen=True)
class RunSettings:
    """What every stream job of one ``sercache extract`` call shares (from its ExtractOptions)."""

    out: Path
    overwrite: bool = False
    strict: bool = False
    progress: bool = True
    flush_bytes: int = 64 << 20
    flush_seconds: float = 30.0
    on_progress: ProgressHook | None = None  # told after each batch (a worker's report to its coordinator)


class StreamJob:
    """Extract stream ``name`` of ``shard`` for ``rows``; ``source_stream``: the stream a text stream
    reads its transcripts from (ASR), if any."""

    def __init__(self, settings: RunSettings, shard: str, name: str, extractor: Extractor, rows: pd.DataFrame,
                 manifest_problems: list[ExtractionProblem], source_stream: str | None = None) -> None:
        self.s, self.shard, self.name, self.extractor = settings, shard, name, extractor
        self.rows, self.manifest_problems, self.source_stream = rows, manifest_problems, source_stream
        self.by_id = rows.set_index("utt_id")
        self.writer: StreamWriter | None = None
        self._done = 0  # utterances done (stored or recorded as failed), for the progress hook

    def run(self) -> StreamRun:
        s, shard, name, extractor = self.s, self.shard, self.name, self.extractor
        final = stream_path(s.out, shard, name)
        if final.exists() and not s.overwrite:
            # a finished compaction's leftovers (a kill after publishing), or an abandoned --overwrite
            remove_staging(staging_dir(s.out, shard, name))
            index = read_stream_index(final)
            log.info("%s/%s: already complete (%d stored)", shard, name, len(index.utt_ids))
            self._report(len(self.rows))
            return StreamRun(shard, name, "already complete", len(index.utt_ids),
                             int((index.problems.severity == "error").sum()))
        self.writer = writer = StreamWriter(s.out, shard, name, extractor.provenance(), self.rows.utt_id.tolist(),
                                            overwrite=s.overwrite, flush_bytes=s.flush_bytes,
                                            flush_seconds=s.flush_seconds)
        run = StreamRun(shard, name, "extracted")
        start = time.monotonic()
        log.info("%s/%s: %d of %d utterances to extract%s", shard, name, len(writer.remaining_ids), len(self.rows),
                 f" ({len(self.rows) - len(writer.remaining_ids)} staged before)" if writer.done_ids else "")
        try:
            self._run_audio(run) if extractor.input == "audio" else self._run_text()
            stop_if_interrupted()  # a Ctrl-C swallowed during the last batch: not finalised, kept for the rerun
        except BaseException:
            with contextlib.suppress(Exception):  # Ctrl-C or a crash: keep every finished batch
                writer.flush()
            raise
        index = read_stream_index(writer.finalize(extractor.stream_attrs()))
        run.stored = len(index.utt_ids)
        run.failed = int((index.problems.severity == "error").sum())
        run.warnings = int((index.problems.severity == "warning").sum())
        run.seconds = time.monotonic() - start
        log.info("%s/%s: %d stored, %d failed, %d warnings in %.1f s%s", shard, name, run.stored, run.failed,
                 run.warnings, run.seconds,
                 f" ({run.audio_seconds / max(run.seconds, 1e-9):.1f} audio-s/s)" if run.audio_seconds else "")
        if run.failed:
            log.warning("%s/%s: %d utterances failed; `sercache cache info %s` lists them", shard, name, run.failed,
                        s.out)
        return run

    def _record(self, problem: ExtractionProblem) -> None:
        """Record a problem; under --strict an error stops the run (finished batches are kept)."""
        assert self.writer is not None
        self.writer.add_problem(problem)
        if problem.stage != self.extractor.kind:  # the extractor's own failures are logged where they happen
            log.info("%s/%s: %s %s in %s: %s", self.shard, self.name, problem.utt_id,
                     "skipped" if problem.severity == "error" else "warning", problem.stage, problem.reason)
        if self.s.strict and problem.severity == "error":
            raise StrictStop(f"--strict: {problem.utt_id} ({problem.path}) failed in {problem.stage}: "
                             f"{problem.reason}. Finished batches are kept; fix the input, or rerun without --strict "
                             "to record and skip it.")

    def _store(self, items: list[Any]) -> None:
        """Extract one batch, store its records and problems, and mark the batch done."""
        assert self.writer is not None
        result = safe_extract(self.extractor, items) if items else ExtractResult()
        for record in result.records:
            self.writer.add(record)
        for p in result.problems:
            self._record(p)
        self.writer.end_batch()

    def _progress(self, total: int) -> tqdm:
        """The bar over the shard's utterances, ``total`` of them left to extract.

        The others (stored before an interruption, or recorded as failed) are counted from the start,
        so a resumed run's bar reads 33/40, not 0/7.
        """
        self._done = len(self.rows) - total
        bar = tqdm(total=len(self.rows), initial=self._done, desc=f"{self.shard}/{self.name}", unit="utt",
                   disable=not self.s.progress, dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
        self._report(self._done)
        return bar

    def _advance(self, bar: tqdm, n: int) -> None:
        bar.update(n)  # a disabled bar counts nothing: the hook gets its own count
        self._done += n
        self._report(self._done)

    def _report(self, done: int) -> None:
        if self.s.on_progress is not None:
            self.s.on_progress(self.shard, self.name, done, len(self.rows))

    def _load(self, batch: list[PlanItem]) -> tuple[list[AudioItem], list[ExtractionProblem]]:
        good, bad = [], []
        for it in batch:
            row = self.by_id.loc[it.utt_id]
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
            bad.extend(ExtractionProblem(it.utt_id, row.path, "audio", w, severity="warning") for w in audio.warnings)
            good.append(AudioItem(it.utt_id, row.path, audio.samples, row.transcript))
        return good, bad

    def _run_audio(self, run: StreamRun) -> None:
        assert self.writer is not None
        remaining = set(self.writer.remaining_ids)
        unreadable = {p.utt_id: p for p in self.manifest_problems if p.stage == "audio" and p.severity == "error"}
        items = []
        for r in self.rows[self.rows.utt_id.isin(remaining)].itertuples(index=False):
            if r.utt_id in unreadable:
                self._record(unreadable[r.utt_id])
                continue
            items.append(PlanItem(r.utt_id, resampled_length(int(r.num_samples), int(r.sample_rate)),
                                  float(r.duration_s)))
        batches = plan_batches(items, self.extractor.batch_policy())
        with self._progress(len(items)) as bar, ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            pending: Future | None = pool.submit(self._load, batches[0]) if batches else None
            for b, batch in enumerate(batches):
                stop_if_interrupted()
                waited = time.monotonic()
                good, bad = pending.result()  # type: ignore[union-attr]
                pending = pool.submit(self._load, batches[b + 1]) if b + 1 < len(batches) else None  # decode ahead
                began = time.monotonic()
                for p in bad:
                    self._record(p)
                self._store(good)
                seconds = sum(it.seconds for it in batch)
                run.audio_seconds += seconds
                log.debug("%s/%s batch %d/%d: %d utterances, %.1f audio-s in %.2f s (%.2f s waiting for audio)",
                          self.shard, self.name, b + 1, len(batches), len(batch), seconds, time.monotonic() - began,
                          began - waited)
                self._advance(bar, len(batch))
                bar.set_postfix_str(f"{run.audio_seconds / max(time.monotonic() - start, 1e-9):.1f} audio-s/s",
                                    refresh=False)

    def _texts(self) -> dict[str, str]:
        """The texts to encode, gold or ASR; an utterance without one is recorded as failed."""
        assert self.writer is not None
        remaining, by_id, texts = self.writer.remaining_ids, self.by_id, {}
        if self.extractor.source == "gold":
            for u in remaining:
                t = str(by_id.loc[u, "transcript"])
                if t.strip():
                    texts[u] = t
                else:
                    self._record(ExtractionProblem(u, str(by_id.loc[u, "path"]), "text", "no gold transcript"))
            return texts
        asr_file = stream_path(self.s.out, self.shard, str(self.source_stream))
        hyp = read_stream_field(asr_file, "text")
        failed = read_stream_index(asr_file).problems.set_index("utt_id")
        for u in remaining:
            if u in hyp:
                texts[u] = hyp[u]
            else:
                why = failed.loc[u, "reason"] if u in failed.index else "not in the asr stream"
                why = why.iloc[0] if isinstance(why, pd.Series) else why
                self._record(ExtractionProblem(u, str(by_id.loc[u, "path"]), "text", f"no ASR transcript ({why})"))
        return texts

    def _run_text(self) -> None:
        texts = self._texts()
        items = [PlanItem(u, len(t), 0.0) for u, t in texts.items()]
        batches = plan_batches(items, self.extractor.batch_policy())
        with self._progress(len(items)) as bar:
            for b, batch in enumerate(batches):
                stop_if_interrupted()
                began = time.monotonic()
                self._store([TextItem(it.utt_id, str(self.by_id.loc[it.utt_id, "path"]), texts[it.utt_id])
                             for it in batch])
                log.debug("%s/%s batch %d/%d: %d texts in %.2f s", self.shard, self.name, b + 1, len(batches),
                          len(batch), time.monotonic() - began)
                self._advance(bar, len(batch))


def safe_extract(extractor: Extractor, items: list[Any]) -> ExtractResult:
    """One batch; a failure is retried utterance by utterance, then recorded (never fatal unless --strict)."""
    try:
        return extractor.extract(items)
    except Exception as exc:  # noqa: BLE001 - recorded per utterance with its reason
        if len(items) > 1:
            merged = ExtractResult()
            for it in items:
                one = safe_extract(extractor, [it])
                merged.records += one.records
                merged.problems += one.problems
            return merged
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
        if "out of memory" in reason.lower():
            reason += " (lower --chunk-seconds or --batch-seconds)"
        log.warning("%s failed in %s: %s", items[0].utt_id, extractor.kind, reason)
        log.debug("traceback", exc_info=True)
        return ExtractResult(problems=[ExtractionProblem(items[0].utt_id, items[0].path, extractor.kind, reason)])
