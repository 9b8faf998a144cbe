"""Shard tasks as child processes of this one (``--executor local``, ``--devices``): no submitit needed.

The ``sercache extract`` process that submits them stays and follows them (the coordinator). Each
task is ``python -m sercache.extract.local_tasks FOLDER INDEX``: it reads the request from
``FOLDER/submission.json`` and runs :func:`~sercache.extract.submissions.run_shard_task`, which is
``extract ... --shard INDEX/N``. A device slot (``--devices cuda:0,cuda:1``) runs one task at a time
and takes the next waiting one when it is free; without ``--devices`` every task starts at once.

Stopping: the tasks run in their own process group, so a Ctrl-C in the terminal reaches only the
coordinator, which passes one SIGINT to each task (each then keeps its finished batches and exits),
and kills what is still running after a grace period or a second Ctrl-C. A task also gets a SIGINT
if the coordinator dies without doing so (killed), so no task outlives it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sercache.cluster_engines import signal_on_parent_death

log = logging.getLogger(__name__)

#: Seconds a stopped task gets to store its finished batches before it is killed.
STOP_GRACE = 60.0


@dataclass
class LocalTask:
    """Task ``index`` of a submission: waiting for a slot, running, or ended."""

    index: int
    stdout: Path
    stderr: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    device: str | None = None

    @property
    def state(self) -> str:
        """queued | running | ended."""
        if self.process is None:
            return "queued"
        return "running" if self.process.poll() is None else "ended"


class LocalPool:
    """The tasks of one submission and the slots they run in (one per device, or one per task)."""

    def __init__(self, folder: Path, indices: list[int], devices: list[str] | None = None) -> None:
        self.folder = Path(folder)
        self.tasks = {i: LocalTask(i, self.folder / f"shard-{i}.out", self.folder / f"shard-{i}.err")
                      for i in indices}
        self.slots: list[str | None] = list(devices) if devices else [None] * len(indices)
        self._running: dict[int, LocalTask] = {}  # slot -> its task
        self._waiting = list(indices)

    def logs(self) -> dict[int, dict[str, str]]:
        return {i: {"stdout": str(t.stdout), "stderr": str(t.stderr)} for i, t in self.tasks.items()}

    def start_ready(self) -> None:
        """Give every free slot the next waiting task."""
        for slot, device in enumerate(self.slots):
            task = self._running.get(slot)
            if (task is None or task.state == "ended") and self._waiting:
                self._running[slot] = self._start(self.tasks[self._waiting.pop(0)], device)

    def _start(self, task: LocalTask, device: str | None) -> LocalTask:
        command = [sys.executable, "-m", __name__, str(self.folder), str(task.index), "--parent", str(os.getpid()),
                   "--log-level", str(logging.getLogger().getEffectiveLevel())]
        if device is not None:
            command += ["--device", device]
        with open(task.stdout, "ab") as out, open(task.stderr, "ab") as err:
            task.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                            start_new_session=True)  # the terminal's Ctrl-C is ours to pass on
        task.device = device
        log.info("shard task %d started%s: pid %d, log %s", task.index, f" on {device}" if device else "",
                 task.process.pid, task.stderr)
        return task

    def stop(self, say: Callable[[str], None] = log.warning, grace: float = STOP_GRACE) -> list[LocalTask]:
        """Start nothing more; ask every running task to stop (SIGINT), kill it after ``grace`` s or a second Ctrl-C."""
        self._waiting.clear()
        running = [t for t in self.tasks.values() if t.state == "running"]
        if not running:
            return []
        say(f"stopping {len(running)} running shard task(s) (pids {', '.join(str(t.process.pid) for t in running)})"
            "; each keeps its finished batches. Ctrl-C again to kill them at once.")
        for task in running:
            with contextlib.suppress(ProcessLookupError):
                task.process.send_signal(signal.SIGINT)
                task.process.send_signal(signal.SIGCONT)  # a stopped (Ctrl-Z'd) task must wake up to obey
        try:
            for task in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    task.process.wait(timeout=grace)
        except KeyboardInterrupt:
            pass
        for task in running:
            if task.process.poll() is None:
                say(f"killing shard task {task.index} (pid {task.process.pid}): it did not stop")
                task.process.kill()
                task.process.wait()
        return running


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's time limit) stops like Ctrl-C: finished batches are kept."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent(parent: int) -> None:
    """Get a SIGINT when the coordinator dies (Linux), and stop now if it already has."""
    signal_on_parent_death(signal.SIGINT)
    if os.getppid() != parent:
        raise KeyboardInterrupt("the coordinator is gone")


def main(argv: list[str] | None = None) -> int:
    """One shard task, as a child process of the coordinator."""
    from sercache.extract.submissions import SUBMISSION, run_shard_task

    parser = argparse.ArgumentParser(prog="python -m sercache.extract.local_tasks")
    parser.add_argument("folder", type=Path)
    parser.add_argument("index", type=int)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--device", default=None)
    parser.add_argument("--log-level", type=int, default=logging.WARNING)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    record = json.loads((args.folder / SUBMISSION).read_text())
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (nohup, &)
    try:
        with sigterm_as_interrupt():
            die_with_parent(args.parent)
            run_shard_task(record["options"], args.index, record["count"], str(args.folder), args.device)
    except KeyboardInterrupt:
        print(f"shard task {args.index}: interrupted; its finished batches are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
