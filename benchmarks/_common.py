"""Helpers shared by the benchmark scripts (not part of the package)."""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSONL = REPO.parent / "shared" / "data" / "iemocap-4class.jsonl"
sys.path.insert(0, str(REPO))


def iemocap_rows(path: str | os.PathLike | None = None) -> list[dict]:
    """The 5531 rows of the standard 4-class IEMOCAP list (ids, sessions, durations, labels)."""
    p = Path(path or DEFAULT_JSONL)
    if not p.exists():
        sys.exit(f"{p} not found: pass --jsonl PATH to iemocap-4class.jsonl")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (``--workdir``, ``--jsonl``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None, help="work here; corpora and caches already there are reused")
    ap.add_argument("--jsonl", default=None, help=f"iemocap-4class.jsonl (default: {DEFAULT_JSONL})")
    return ap


def workdir(path: str | None, name: str) -> Path:
    """``--workdir`` if given, else a fresh temporary directory named after the benchmark."""
    return Path(path or tempfile.mkdtemp(prefix=f"sercache-{name}-"))


def sampled_rows(path: str | os.PathLike | None, n: int | None, seed: int) -> list[dict]:
    """``n`` IEMOCAP rows (all if None) in a seeded random order, so durations are drawn from the real list."""
    rows = iemocap_rows(path)
    random.Random(seed).shuffle(rows)
    return rows[:n]


@contextmanager
def timer(results: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def peak_rss_mb(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024


def machine() -> str:
    import platform

    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = "?"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {threads}"


def gate_sized_cache(path: Path, rows: list[dict], signal: float = 0.5) -> Path:
    """An IEMOCAP-shaped synthetic cache with 1024-d fp16 audio frames and 768-d text tokens (written once)."""
    from sercache.synthetic.cache import SyntheticStream, manifest_from_rows, write_synthetic_cache

    if not (path / "sercache.json").exists():
        write_synthetic_cache(path, manifest_from_rows(rows), [
            SyntheticStream("ssl", "ssl", 1024, (24,), signal=signal),
            SyntheticStream("text_asr", "text", 768, signal=signal)])
    return path


def audio_text_data(cache_dir: Path, device: str = "cpu"):  # noqa: ANN201 - (InMemoryData, table, preset)
    """Every utterance of an audio+text cache in memory, as the trainer holds a fold."""
    import sercache
    from sercache.splits import get_preset
    from sercache.training.data import InMemoryData, labelled_utterances
    from sercache.training.roles import resolve_roles

    cache = sercache.open_cache(cache_dir)
    preset = get_preset("iemocap4")
    roles = resolve_roles(cache, ("audio", "text"), (), {"text": "text_asr"}, {})
    table = labelled_utterances(cache, preset, roles)
    return InMemoryData(cache, table, roles, preset, device=device), table, preset


def train_epoch(head, optimizer, batches: list) -> float:  # noqa: ANN001 - seconds for one pass over `batches`
    """One optimisation pass, as the trainer runs it (batches are ready-made ``Batch`` factories)."""
    start = time.perf_counter()
    for make in batches:
        loss = head.training_step(make())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start
