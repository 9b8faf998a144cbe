"""``sercache predict``: a trained run's emotion predictions for new audio, with the features the cache had.

The features are recomputed by the extractors that made the run's cache, rebuilt from each
stream's recorded provenance (:mod:`sercache.features.rebuild`: same model folder or id,
weights fingerprint, layers, dtype, precision, chunking), written with the real stream writer
into an in-memory cache (:mod:`sercache.store.memory`) and read back by the same code that
feeds the heads in training (``load_fold``); every finished fold x seed's head is rebuilt as
``sercache eval`` rebuilds it (:func:`restore_head`, with its normalisation statistics). The
softmax is averaged over those heads (``fold`` picks one fold's).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sercache._typing import Pathlike
from sercache.features.base import AudioItem, Extractor, TextItem
from sercache.features.rebuild import extractor_for, missing_models
from sercache.heads import get_head
from sercache.option_pairs import parse_pairs
from sercache.runs.evaluate import restore_head
from sercache.runs.predict_inputs import (
    PredictError,
    Segment,
    Source,
    check_sources,
    check_window,
    collect_sources,
    count_segments,
    segments,
    waveform_samples,
)
from sercache.runs.record import RunRecord, read_run
from sercache.splits import get_preset, load_folds
from sercache.store import open_cache
from sercache.store.atomic import write_text_atomic
from sercache.store.memory import MemoryStore
from sercache.training.pooled import load_fold
from sercache.training.run_config import recorded_roles
from sercache.training.run_layout import finished_tasks, folds_path
from sercache.training.trainer import evaluate

log = logging.getLogger(__name__)
#: Segments whose features are held in memory at once.
CHUNK = 64
#: ...and seconds of audio (an input longer than this is computed alone): a folder of long recordings is
#: decoded one batch at a time, not whole.
CHUNK_SECONDS = 600.0
__all__ = ["PredictError", "Prediction", "Predictor", "predict_run"]


@dataclass
class Prediction:
    """``table``: one row per input (or window); ``logits``: each head's, ``"fold/seedK"`` -> ``(rows, classes)``."""

    table: pd.DataFrame
    logits: dict[str, np.ndarray] = field(default_factory=dict)


class Predictor:
    """A run's heads and the extractors of its cache's streams, ready to predict.

    Args:
        run: a run directory (or its :class:`RunRecord`).
        fold: one fold (number or name) instead of every fold's heads.
        cache: the run's cache, when it moved since training (its provenance says how to compute the features).
        device: ``cpu``, ``cuda`` or ``auto``.
        models: stream name -> folder, for a model folder that moved (its weights are still checked).
        allow_different_weights: predict even when a model's weights differ from the cache's.
        progress: progress bars on stderr while the features are computed.
    """

    def __init__(self, run: Pathlike | RunRecord, *, fold: str | int | None = None, cache: Pathlike | None = None,
                 device: str = "auto", models: dict[str, str] | None = None, allow_different_weights: bool = False,
                 progress: bool = False) -> None:
        from sercache.training.run import resolve_device, select_folds

        self.run = run if isinstance(run, RunRecord) else read_run(run)
        config = self.config = self.run.config
        self.head_cls = get_head(config.head)
        self.preset = get_preset(config.labels.preset)
        self.classes = list(config.labels.classes)
        self.device = resolve_device(device)
        self.progress = progress
        folds = load_folds(folds_path(self.run.path))
        folds = select_folds(folds, str(fold)) if fold is not None else folds
        self.tasks = [(f"{f.name}/{d.name}", d) for f in folds for d in finished_tasks(self.run.path, f.name)]
        if not self.tasks:
            raise PredictError(f"{self.run.path} has no finished fold x seed{f' in fold {fold}' if fold else ''} "
                               "(no */seed*/DONE): train it first")
        self.extractors = self._extractors(cache, dict(models or {}), allow_different_weights)

    # ------------------------------------------------------------------ setup
    def _extractors(self, cache: Pathlike | None, models: dict[str, str], allow: bool) -> dict[str, Extractor]:
        where = Path(cache or self.config.cache)
        if not where.is_dir():
            raise PredictError(f"the run was trained on the cache {where}, which is not there; predict reads its "
                               "provenance to compute features as it did: give its new location with --cache")
        store = open_cache(where)
        try:
            streams = self.config.streams
            missing = [n for n in streams if n not in store.streams]
            if missing:
                raise PredictError(f"the run reads stream(s) {missing} which {where} does not hold: is it the run's cache?")
            odd = next((store.streams[n].inconsistent for n in streams if store.streams[n].inconsistent), "")
            if odd:
                raise PredictError(f"{odd}: predict cannot tell which settings the run's features were computed with")
            self._check_run_matches_cache(store)
            kinds = {n: store.streams[n].provenance.get("identity", {}) for n in streams}
            self.gold = next((n for n, i in kinds.items() if i.get("kind") == "text" and i.get("source") == "gold"), None)
            self.asr = None
            if any(i.get("kind") == "text" and i.get("source") == "asr" for i in kinds.values()):
                asr = [n for n, s in store.streams.items() if s.kind == "asr" and s.shards]
                if not asr:
                    raise PredictError(f"the run reads ASR-transcript text, and {where} has no finished asr stream")
                self.asr = "asr" if "asr" in asr else asr[0]
                streams = [self.asr] + [n for n in streams if n != self.asr]
            unknown = sorted(set(models) - set(streams))
            if unknown:
                raise PredictError(f"--model {unknown[0]}=...: the run computes no stream {unknown[0]!r} (it uses "
                                   f"{', '.join(streams)})")
            absent = missing_models({n: store.streams[n].provenance for n in streams}, models)
            if len(absent) > 1:
                raise PredictError(f"{len(absent)} model folders the run needs are missing (nothing was loaded):\n  "
                                   + "\n  ".join(absent))
            if absent:
                raise PredictError(absent[0])
            built = {n: extractor_for(n, store.streams[n].provenance, device=self.device, model=models.get(n),
                                      allow_different_weights=allow) for n in streams}
        finally:
            store.close()
        # audio streams first: text_asr encodes what the asr stream transcribed
        return dict(sorted(built.items(), key=lambda kv: kv[1].input != "audio"))

    def _check_run_matches_cache(self, store: Any) -> None:
        """A cache re-extracted since training holds features the heads never saw: refuse it."""
        for role, enc in self.config.encoders.items():
            for src in enc.get("sources") or [enc]:
                stream = src.get("stream")
                if stream in store.streams and "weights" in src:
                    now = store.streams[stream].provenance.get("identity", {}).get("weights")
                    if now != src["weights"]:
                        raise PredictError(
                            f"stream {stream!r} ({role}) of {store.path} was re-extracted after the run was trained "
                            f"(weights {src['weights']} at training, {now} now); retrain the run on this cache")

    # ------------------------------------------------------------------ prediction
    def predict(self, waveform: np.ndarray, sample_rate: int, *, window: float | None = None,
                hop: float | None = None) -> pd.DataFrame:
        """The table :func:`predict_run` writes, for one array (one row, or one per window)."""
        source = Source("<waveform>", samples=waveform_samples(waveform, sample_rate))
        return self.predict_sources([source], window=window, hop=hop).table

    def predict_sources(self, sources: list[Source], *, window: float | None = None,
                        hop: float | None = None) -> Prediction:
        check_window(window, hop)
        if window is not None and self.gold:
            raise PredictError(f"--window: the run reads stream {self.gold!r}, a gold transcript of the whole "
                               "recording, which no window has; predict whole utterances, or use an ASR-text run")
        check_sources(sources, self.gold)
        parts: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in self.tasks}
        rows: list[tuple[str, float, float]] = []
        total = count_segments(sources, window, hop)
        with tqdm(total=total * len(self.extractors), desc="features", unit="step", disable=not self.progress,
                  dynamic_ncols=True) as bar:
            # a bounded number of segments at a time, each input decoded when its turn comes: an hour in 1 s
            # windows never holds all its frames at once, and a folder of recordings is never decoded whole
            for chunk in _batches(segments(sources, window, hop), CHUNK, CHUNK_SECONDS):
                rows += [(s.source.name, s.start_s, s.end_s) for s in chunk]
                data = self._features(chunk, bar)
                del chunk  # the audio of these segments (the streams have read it)
                idx = np.arange(len(data))
                for name, seed_dir in self.tasks:
                    parts[name].append(evaluate(restore_head(seed_dir, self.config.head, data), data, idx, 64,
                                                     precision=self.config.train.precision)[0])
                del data
        logits = {name: np.concatenate([r["logits"] for r in rs]) for name, rs in parts.items()}
        regressions = [np.concatenate([r["regression"] for r in rs]) for rs in parts.values()
                       if rs[0]["regression"] is not None]
        probs = np.mean([torch.softmax(torch.from_numpy(x).double(), 1).numpy() for x in logits.values()], axis=0)
        table = pd.DataFrame({"path": [name for name, _, _ in rows]})
        if window is not None:
            table["start_s"] = [round(a, 3) for _, a, _ in rows]
            table["end_s"] = [round(b, 3) for _, _, b in rows]
        table["prediction"] = [self.classes[k] for k in probs.argmax(1)]
        for k, c in enumerate(self.classes):
            table[f"prob_{c}"] = probs[:, k]
        if regressions:  # in the [0, 1] range the head was trained on (the corpus's own V/A range)
            va = np.mean(regressions, axis=0)
            table["valence_pred"], table["arousal_pred"] = va[:, 0], va[:, 1]
        return Prediction(table, logits)

    def _features(self, segs: list[Segment], bar: tqdm) -> Any:
        """Every stream of the run for these segments, then loaded as the heads read a fold."""
        ids = [s.utt_id for s in segs]
        memory = MemoryStore(pd.DataFrame({"utt_id": ids, "path": [s.source.name for s in segs]}),
                             f"features of {len(segs)} inputs")
        asr_text: dict[str, str] = {}
        try:
            for name, ex in self.extractors.items():
                if ex.input != "audio":  # the audio streams are done (they come first): free the samples
                    for s in segs:
                        s.samples = None
                records, problems = [], []
                bar.set_postfix_str(name, refresh=False)
                for s in segs:
                    item = (AudioItem(s.utt_id, s.source.name, s.samples, s.source.transcript or "")
                            if ex.input == "audio" else
                            TextItem(s.utt_id, s.source.name, asr_text[s.utt_id] if ex.source == "asr"
                                     else str(s.source.transcript)))
                    try:
                        result = ex.extract([item])
                    except Exception as exc:  # noqa: BLE001 - named with its input
                        raise PredictError(f"{s.source.name}: computing stream {name!r} failed: "
                                           f"{type(exc).__name__}: {exc}") from exc
                    for p in result.problems:
                        if p.severity == "error":
                            raise PredictError(f"{s.source.name}: stream {name!r}: {p.reason}")
                        log.warning("%s: %s: %s", s.source.name, name, p.reason)
                    records += result.records
                    problems += result.problems
                    bar.update()
                if name == self.asr:
                    asr_text = {r.utt_id: str(r.per_utterance["text"]) for r in records}
                memory.add_stream(name, records, problems, ex.provenance(), ex.stream_attrs())
                item = result = records = None  # the stream's frames now live in the memory store alone
            for s in segs:
                s.samples = None
            store = memory.open()
        except BaseException:
            memory.close()
            raise
        try:
            roles = recorded_roles(store, self.config)
            table = pd.DataFrame({"utt_id": ids, "y": 0})  # no labels: prediction loads no training target
            return load_fold(store, table, roles, self.preset, self.head_cls, self.config.hyperparameters,
                             self.device, needs=frozenset())
        finally:
            store.close()

    def close(self) -> None:
        for ex in self.extractors.values():
            ex.close()


def _batches(items: Iterable[Segment], size: int, seconds: float) -> Iterator[list[Segment]]:
    """Up to ``size`` segments and ``seconds`` of audio at a time, drawn from ``items`` (decoded) only as needed."""
    batch: list[Segment] = []
    held = 0.0
    for seg in items:
        batch.append(seg)
        held += seg.end_s - seg.start_s
        if len(batch) >= size or held >= seconds:
            yield batch
            batch, held = [], 0.0
    if batch:
        yield batch


def parse_models(specs: list[str]) -> dict[str, str]:
    """``["ssl=/models/hubert"]`` -> ``{"ssl": "/models/hubert"}``."""
    return parse_pairs(specs, "--model", "STREAM=FOLDER", "ssl=/models/hubert-large", PredictError)


def predict_run(run: Pathlike, inputs: list[Pathlike], *, out: Pathlike | None = None, fold: str | int | None = None,
                window: float | None = None, hop: float | None = None, cache: Pathlike | None = None,
                device: str = "auto", models: dict[str, str] | None = None, allow_different_weights: bool = False,
                progress: bool = False) -> tuple[pd.DataFrame, Path | None]:
    """Predict every input (file, folder, CSV manifest); write the table to ``out`` (atomically) when given."""
    check_window(window, hop)
    if out is not None and Path(out).is_dir():
        raise PredictError(f"--out {out} is a folder; give the CSV file to write, e.g. {Path(out) / 'predictions.csv'}")
    sources = collect_sources(list(inputs))
    check_sources(sources, None)  # every file readable, before any model loads
    predictor = Predictor(run, fold=fold, cache=cache, device=device, models=models,
                          allow_different_weights=allow_different_weights, progress=progress)
    try:
        table = predictor.predict_sources(sources, window=window, hop=hop).table
    finally:
        predictor.close()
    if out is None:
        return table, None
    write_text_atomic(Path(out), table.to_csv(index=False))
    return table, Path(out)


def run_predict(results: RunRecord, waveform: np.ndarray, sample_rate: int, **options: Any) -> pd.DataFrame:
    """``RunResults.predict``: one Predictor per set of options, kept on the run for later calls."""
    window, hop = options.pop("window", None), options.pop("hop", None)
    key = tuple(sorted((k, str(v)) for k, v in options.items()))
    cached = results.__dict__.setdefault("_predictors", {})
    if key not in cached:
        cached[key] = Predictor(results, **options)
    return cached[key].predict(waveform, sample_rate, window=window, hop=hop)
