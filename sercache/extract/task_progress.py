"""Per-utterance progress of shard tasks: each task writes a small JSON file, the process following them sums them.

A shard task (a local worker or a SLURM array task) runs with its progress bars off; instead
:class:`ProgressFile` is its extraction's progress hook, and keeps ``CACHE/.jobs/<id>/progress-<i>.json``
up to date (``{"shard/stream": [done, total]}``). :class:`TaskBar` shows all tasks of a submission as one
bar, and ``cache status`` shows a running task's counts.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: Seconds between two writes of a task's progress file (the last state is always written).
WRITE_EVERY = 0.5


def progress_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"progress-{index}.json"


class ProgressFile:
    """A task's progress hook ``(shard, stream, done, total)``, kept in ``progress-<index>.json``."""

    def __init__(self, folder: Path, index: int) -> None:
        self.path = progress_path(folder, index)
        self.counts: dict[str, list[int]] = {}
        self._written = 0.0

    def __call__(self, shard: str, stream: str, done: int, total: int) -> None:
        self.counts[f"{shard}/{stream}"] = [done, total]
        if time.monotonic() - self._written >= WRITE_EVERY or done == total:
            self.write()

    def write(self) -> None:
        """Replace the file (no fsync: losing the last state to a power cut costs nothing)."""
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.counts))
            os.replace(tmp, self.path)
        except OSError as exc:  # progress is a courtesy: it must never stop the extraction
            log.debug("cannot write %s: %s", self.path, exc)
        self._written = time.monotonic()


@dataclass
class TaskProgress:
    """Utterance-streams done and planned, summed over tasks, and per stream."""

    done: int = 0
    total: int = 0
    streams: dict[str, list[int]] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{name} {d}/{t}" for name, (d, t) in self.streams.items())


def read_progress(folder: Path, indices: Iterable[int]) -> TaskProgress:
    """The summed progress files of these tasks (a task that has not written one yet counts nothing)."""
    out = TaskProgress()
    for i in indices:
        try:
            counts = json.loads(progress_path(folder, i).read_text())
        except (OSError, ValueError):
            continue
        for key, (done, total) in counts.items():
            stream = key.rsplit("/", 1)[-1]
            per = out.streams.setdefault(stream, [0, 0])
            per[0] += done
            per[1] += total
            out.done += done
            out.total += total
    return out


class TaskBar:
    """One progress bar over the utterances of every task of a submission (stderr; off with ``enabled=False``)."""

    def __init__(self, folder: Path, indices: list[int], enabled: bool = True) -> None:
        self.folder, self.indices = folder, indices
        self.bar = tqdm(total=None, desc=f"extract ({len(indices)} shard task(s))", unit="utt",
                        disable=not enabled, dynamic_ncols=True, mininterval=0.5, smoothing=0.1)

    def update(self, ended: int) -> None:
        if self.bar.disable:
            return
        now = read_progress(self.folder, self.indices)
        postfix = f"{ended}/{len(self.indices)} tasks ended" + (f"; {now.describe()}" if now.streams else "")
        if now.done == self.bar.n and now.total == (self.bar.total or 0) and postfix == self.bar.postfix:
            return  # nothing new: no line for a log file
        if now.total:
            self.bar.total = now.total
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(max(0, now.done - self.bar.n))

    def close(self, ended: int) -> None:
        self.update(ended)
        self.bar.refresh()
        self.bar.close()
