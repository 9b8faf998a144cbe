"""Helpers shared by the benchmark scripts (not part of the package)."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSONL = REPO.parent / "shared" / "data" / "iemocap-4class.jsonl"
sys.path.insert(0, str(REPO))


def iemocap_rows(path: str | os.PathLike | None = None) -> list[dict]:
    """The 5531 rows of the standard 4-class IEMOCAP list (ids, sessions, durations, labels)."""
    p = Path(path or DEFAULT_JSONL)
    if not p.exists():
        sys.exit(f"{p} not found: pass --jsonl PATH to iemocap-4class.jsonl")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


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
