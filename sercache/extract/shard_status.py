"""``sercache cache status``: every shard task of a cache's submissions, and how to finish the rest.

A task is *done* or *failed* once its marker exists (``CACHE/.jobs/<id>/shard-<i>.json``); *queued*
or *running* while the engine lists it (``squeue``; for local tasks, a live lock holder); and
*failed* as well when the engine no longer lists it but it left no marker (cancelled, killed,
out of time or memory), with the last lines of its log.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sercache.cluster_engines import SQUEUE_STATES, squeue_states
from sercache.extract.submissions import Submission, read_submissions, resubmit_command, shard_marker
from sercache.extract.task_progress import read_progress
from sercache.store.layout import LOCK_FILE
from sercache.store.lock import describe_holder


def lock_holders(cache: Path, index: int, count: int) -> list[dict]:
    """Who holds the shard locks of task ``index/count``: the lock files' ``{pid, host, since}`` (empty once released)."""
    out = []
    for lock in sorted(Path(cache).glob(f"*-shard{index}of{count}/{LOCK_FILE}")):
        try:
            info = json.loads(lock.read_text() or "{}")
        except (OSError, ValueError):
            continue
        if {"pid", "host", "since"} <= set(info):
            out.append(info)
    return out


def _alive_here(holders: list[dict]) -> bool:
    """A holder on this host whose process still exists (a SIGKILLed writer leaves its entry behind)."""
    for info in holders:
        if info.get("host") == socket.gethostname():
            try:
                os.kill(int(info.get("pid")), 0)
                return True
            except (OSError, TypeError, ValueError):
                continue
    return False


def task_states(sub: Submission) -> dict[int, str]:
    """index -> done | failed | running | queued, for one submission."""
    # ask the engine before reading markers: a task that ends in between has written its marker
    listed = squeue_states(sub.array_id) if sub.executor == "slurm" else {}
    live = {i: task.state for i, task in sub.pool.tasks.items()} if sub.pool is not None else {}
    out = {}
    for i in sub.indices:
        marker = shard_marker(sub.folder, i)
        if marker.exists():
            out[i] = json.loads(marker.read_text()).get("state", "failed")
        elif sub.executor == "slurm":
            engine = listed.get(sub.job_ids[i])
            out[i] = SQUEUE_STATES.get(engine, "failed") if engine else "failed"
        elif i in live:  # a local task started by this very process: ended without its marker is failed
            out[i] = "failed" if live[i] == "ended" else live[i]
        else:
            holders = lock_holders(sub.folder.parent.parent, i, sub.count)
            out[i] = "running" if _alive_here(holders) else ("failed" if Path(sub.logs[i]["stderr"]).exists()
                                                             else "queued")
    return out


def log_tail(sub: Submission, index: int, lines: int = 8) -> list[str]:
    for key in ("stderr", "stdout"):
        path = Path(sub.logs[index][key])
        if path.exists():
            text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if text:
                return text[-lines:]
    return []


@dataclass
class ShardState:
    index: int
    count: int
    state: str          # done | failed | running | queued | not started
    job: str = ""
    detail: str = ""
    log: tuple[str, ...] = ()


@dataclass
class CacheStatus:
    cache: Path
    submission: Submission | None
    shards: list[ShardState]

    @property
    def unfinished(self) -> list[int]:
        return [s.index for s in self.shards if s.state in ("failed", "not started")]

    @property
    def resubmit(self) -> str:
        if self.submission is None or not self.unfinished:
            return ""
        return resubmit_command(self.submission.command, self.unfinished)


def cache_status(cache: Path) -> CacheStatus:
    """The state of every task ``i/N`` of the cache's latest ``--shards N``, over all its submissions."""
    from sercache.extract.submissions import drop_pickles

    subs = read_submissions(cache)
    if not subs:
        return CacheStatus(Path(cache), None, [])
    latest = subs[-1]
    count = latest.count
    shards: dict[int, ShardState] = {i: ShardState(i, count, "not started") for i in range(1, count + 1)}
    for sub in [s for s in subs if s.count == count]:  # later submissions overrule earlier ones
        states = task_states(sub)
        drop_pickles(sub, {i: s for i, s in states.items() if s in ("done", "failed")}, wait=False)
        for i, state in states.items():
            s = ShardState(i, count, state, job=f"{sub.executor} job {sub.job_ids[i]}")
            if state == "done":
                m = json.loads(shard_marker(sub.folder, i).read_text())
                s.detail = f"{m.get('stored', 0)} utterance-streams stored, {m.get('failed', 0)} failed, " \
                           f"{m.get('seconds', 0):.0f} s"
            elif state == "running":
                holders = lock_holders(cache, i, count)
                s.detail = f"lock held by {describe_holder(holders[0])}" if holders else "starting (no shard locked yet)"
                done = read_progress(sub.folder, [i])
                if done.total:
                    s.detail += f"; utterances {done.describe()}"
            elif state == "failed":
                marker = shard_marker(sub.folder, i)
                s.detail = (json.loads(marker.read_text()).get("error", "") if marker.exists()
                            else "ended without finishing (cancelled, killed, or out of time/memory)")
                s.log = tuple(log_tail(sub, i))
            shards[i] = s
    return CacheStatus(Path(cache), latest, [shards[i] for i in sorted(shards)])


def format_status(status: CacheStatus) -> str:
    if status.submission is None:
        return (f"{status.cache}: no submitted extraction (nothing under .jobs/). "
                "`sercache extract ... --executor slurm --shards N` submits one.")
    sub = status.submission
    counts = {k: sum(s.state == k for s in status.shards) for k in ("done", "running", "queued", "failed",
                                                                      "not started")}
    lines = [f"{status.cache}: {sub.count} shard task(s), latest submission {sub.id} ({sub.executor}, "
             f"{sub.created}); " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)]
    for s in status.shards:
        lines.append(f"  shard {s.index}/{s.count}  {s.state:<11} {s.job}  {s.detail}".rstrip())
        lines.extend(f"      | {line}" for line in s.log)
    if status.resubmit:
        lines.append("resubmit the failed and missing shards (they resume from what they stored):")
        lines.append(f"  {status.resubmit}")
    elif counts["done"] == sub.count:
        lines.append(f"every shard is done; check the cache with `sercache cache verify {status.cache}`")
    return "\n".join(lines)
