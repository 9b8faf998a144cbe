"""Scale-out extraction: shard tasks as local processes (no submitit needed) or through submitit on a real
one-node SLURM, per-device workers, Ctrl-C on the coordinator, `cache status` and its resubmission command.
Every sharded cache must equal, byte for byte, the cache one process extracts.

The SLURM tests need a running cluster (`export SLURM_CONF=$(bash ci/slurm/start.sh)`, as `.ci/run` does);
they skip without one unless SERCACHE_REQUIRE_SLURM=1, which `.ci/run` sets so CI can never skip them.
"""
from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sercache
from sercache.cluster_engines import time_minutes
from sercache.extract.cluster import ClusterOptions
from sercache.extract.options import ExtractError
from sercache.extract.submissions import resubmit_command
from tests.conftest import extract_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # identical numerics in every process
STREAMS = "ssl,mfcc"


def sercache_cli(*args: str, check: bool = True, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sercache", *args], capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


BLOCK_SUBMITIT = """import sys

class NoSubmitit:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "submitit":
            raise ImportError("submitit is not installed here (tests/test_cluster.py blocks it)")
        return None

sys.meta_path.insert(0, NoSubmitit())
"""


@pytest.fixture
def no_submitit(tmp_path) -> dict[str, str]:
    """ENV in which `import submitit` fails, in sercache and every process it starts (a sitecustomize module)."""
    folder = tmp_path / "no-submitit"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCK_SUBMITIT)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [ENV.get("PYTHONPATH")])])}
    probe = subprocess.run([sys.executable, "-c", "import submitit"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "blocks it" in probe.stderr  # the block works, or the tests prove nothing
    return env


def assert_same_features(a: Path, b: Path) -> None:
    """Every stored field of every stream and utterance is identical (dtype, shape and bytes)."""
    x, y = sercache.open_cache(a), sercache.open_cache(b)
    assert set(x.streams) == set(y.streams)
    for name, info in x.streams.items():
        ids = x.utt_ids(name)
        assert ids and sorted(ids) == sorted(y.utt_ids(name)), name
        for u in ids:
            for field in info.frame_fields:
                p, q = x.frames(name, u, name=field), y.frames(name, u, name=field)
                assert p.dtype == q.dtype and p.shape == q.shape and p.tobytes() == q.tobytes(), (name, field, u)
        for field in info.per_utterance_fields:
            p, q = x.per_utterance(name, field, ids), y.per_utterance(name, field, ids)
            assert p.dtype == q.dtype and np.array_equal(p, q) or p.tobytes() == q.tobytes(), (name, field)
    x.close()
    y.close()


@pytest.fixture(scope="module")
def reference(small_corpus, models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "cache"
    sercache_cli(*extract_args(small_corpus, out, models, streams=STREAMS))
    return out


def no_pickles_left(cache: Path) -> None:
    assert not list(cache.rglob("*.pkl")), list(cache.rglob("*.pkl"))


# ----------------------------------------------------------------------------- local engines
def test_local_executor_shards_equal_one_process(small_corpus, models, reference, tmp_path, no_submitit):
    out = tmp_path / "cache"
    proc = sercache_cli(*extract_args(small_corpus, out, models, "--executor", "local", "--shards", "3",
                                      streams=STREAMS), env=no_submitit)
    assert "submitted 3 shard task(s) of 3 as local processes" in proc.stdout
    assert "3 done" in proc.stdout and "every shard is done" in proc.stdout
    assert sorted({s.split("-shard")[1] for s in sercache.open_cache(out).shards}) == ["1of3", "2of3", "3of3"]
    assert_same_features(out, reference)
    assert sercache_cli("cache", "verify", str(out)).stdout.strip().endswith("OK")
    no_pickles_left(out)
    status = sercache_cli("cache", "status", str(out))
    assert status.stdout.count(" done ") == 3 and "resubmit" not in status.stdout


def test_devices_run_the_shards_one_at_a_time_per_device_without_submitit(small_corpus, models, reference, tmp_path,
                                                                           no_submitit):
    out = tmp_path / "cache"
    proc = sercache_cli(*extract_args(small_corpus, out, models, "--executor", "local", "--shards", "3", "--devices",
                                      "cpu,cpu", streams=STREAMS), env=no_submitit)
    assert "submitted 3 shard task(s) of 3 as local processes on cpu,cpu" in proc.stdout, proc.stdout
    markers = [json.loads(p.read_text()) for p in out.glob(".jobs/*/shard-*.json")]
    assert sorted((m["index"], m["state"], m["device"]) for m in markers) == [(i, "done", "cpu") for i in (1, 2, 3)]
    for m in markers:  # two devices: no task starts while two others run
        assert sum(o["started"] <= m["started"] < o["ended"] for o in markers if o is not m) <= 1, markers
    assert_same_features(out, reference)


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc), found independently of what sercache says."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_ctrl_c_stops_the_device_workers_says_what_is_kept_and_the_same_command_resumes(small_corpus, models,
                                                                                         reference, tmp_path):
    out = tmp_path / "cache"
    command = [sys.executable, "-m", "sercache", *extract_args(small_corpus, out, models, "--devices", "cpu,cpu",
                                                               "--flush-seconds", "0", streams=STREAMS)]
    command.remove("--no-progress")  # the workers' progress, as one bar on the coordinator's stderr
    first = tmp_path / "first.err"
    with open(first, "w") as err:
        # SIGINT back to its default in the coordinator: a test run in the background would pass it on ignored
        coordinator = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=ENV,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: list[int] = []
    try:
        while not list(out.glob("*/.staging/*/seg-*.h5")):  # the event: a worker has stored a batch
            assert coordinator.poll() is None, first.read_text()
            time.sleep(0.05)
        workers = child_pids(coordinator.pid)
        assert len(workers) == 2, workers
        coordinator.send_signal(signal.SIGINT)
        assert coordinator.wait(timeout=600) == 130, first.read_text()
        assert [pid for pid in workers if running(pid)] == []  # no orphan: every worker has ended
    finally:
        for pid in [coordinator.pid, *workers]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    said = first.read_text()
    assert "stopping 2 running shard task(s)" in said and "rerun the same command to resume" in said, said
    kept = [line.removeprefix("kept ") for line in said.splitlines() if line.startswith("kept ")]
    assert kept and all("utterances of stream" in line for line in kept), said
    assert sercache_cli("cache", "status", str(out), check=False).returncode == 1  # not finished: resubmit offered

    again = subprocess.run(command, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming: the cache already holds {'; '.join(kept)}\n" in again.stderr  # exactly what was kept
    last_bar = again.stderr.replace("\n", "\r").split("\r")[-2]
    assert "160/160" in last_bar and "ssl 80/80, mfcc 80/80" in last_bar, last_bar  # 2 x 80 utterances, all shown
    assert_same_features(out, reference)
    no_pickles_left(out)


def test_cluster_requests_are_checked_before_anything_is_submitted(small_corpus, models, tmp_path):
    out = tmp_path / "cache"
    cases = [
        (["--shards", "3"], "--shards needs --executor slurm, --executor local or --devices"),
        (["--executor", "local"], "--executor needs --shards N"),
        (["--executor", "local", "--shards", "3", "--only-shards", "4"], "--only-shards 4: shards count from 1"),
        (["--executor", "local", "--shards", "3", "--only-shards", "x"], "--only-shards 'x': give task numbers"),
        (["--executor", "slurm", "--shards", "2", "--slurm-time", "soon"], "--slurm-time 'soon'"),
        (["--executor", "local", "--shards", "2", "--shard", "1/2"], "--shard and --shards/--devices exclude"),
        (["--devices", "cpu,cpu", "--executor", "slurm"], "--devices runs the shard tasks as local processes"),
        (["--devices", ","], "--devices ',': give devices"),
    ]
    for extra, message in cases:
        proc = sercache_cli(*extract_args(small_corpus, out, models, *extra, streams=STREAMS), check=False)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
    bad_model = extract_args(small_corpus, out, {**models, "ssl": tmp_path / "nowhere"}, "--executor", "local",
                             "--shards", "2", streams=STREAMS)
    proc = sercache_cli(*bad_model, check=False)
    assert proc.returncode == 2 and "nowhere" in proc.stderr
    assert not (out / ".jobs").exists()  # nothing was submitted


def test_slurm_times_and_resubmit_commands():
    assert [time_minutes(t) for t in ("4:00:00", "0:30", "90", "1-00:00:00", "0:00:01")] == [240, 30, 90, 1440, 1]
    with pytest.raises(ExtractError, match="--shards 0"):
        ClusterOptions(executor="slurm", shards=0)
    command = "sercache extract /c --corpus iemocap --out /x --executor slurm --shards 8 --only-shards 1,2"
    assert shlex.split(resubmit_command(command, [3, 7]))[-2:] == ["--only-shards", "3,7"]
    assert resubmit_command(command, [3]).count("--only-shards") == 1


def test_result_pickles_written_after_the_results_are_still_dropped(tmp_path, monkeypatch):
    # submitit writes <job>_result.pkl as the task's process exits, after the task wrote its results: the
    # pickles are dropped only once squeue no longer lists the task (a CI run once kept one behind)
    from sercache import cluster_engines

    (tmp_path / "7_0_submitted.pkl").write_bytes(b"x")
    (tmp_path / "7_1_submitted.pkl").write_bytes(b"x")
    answers = [{"7_0": "COMPLETING", "7_1": "RUNNING"}, {"7_1": "COMPLETING"}, {}]

    def squeue(array_id):
        assert array_id == "7"
        listed = answers.pop(0)
        for job in ("7_0", "7_1"):  # a listed task may still write its result pickle
            if job in listed:
                (tmp_path / f"{job}_result.pkl").write_bytes(b"x")
        return listed

    monkeypatch.setattr(cluster_engines, "squeue_states", squeue)
    cluster_engines.drop_pickles_once_gone(tmp_path, ["7_0", "7_1"], "7", poll=0)
    assert not answers and not list(tmp_path.glob("*.pkl"))


def test_status_of_a_cache_without_submissions(reference):
    proc = sercache_cli("cache", "status", str(reference))
    assert "no submitted extraction" in proc.stdout


# ----------------------------------------------------------------------------- a real SLURM
def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


#: Set by `.ci/run`: there a missing SLURM, or a missing module of the `cluster` extra, fails instead of skipping.
REQUIRE_ENV = "SERCACHE_REQUIRE_SLURM"
REQUIRED = os.environ.get(REQUIRE_ENV) == "1"


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def cluster_extra(module: str) -> pytest.MarkDecorator:
    """Skip when the `cluster` extra's ``module`` is missing (as the opensmile and browser tests do), unless required."""
    return pytest.mark.skipif(not REQUIRED and not importable(module),
                              reason=f"{module} not installed: pip install -e '.[cluster]' ({REQUIRE_ENV}=1 fails instead)")


slurm = pytest.mark.skipif(not REQUIRED and not (importable("submitit") and _slurm_up()),
                           reason="no SLURM cluster or no submitit here: pip install -e '.[cluster]' and "
                           "export SLURM_CONF=$(bash ci/slurm/start.sh) first")


def _squeue(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job.split("_")[0], "-o", "%i %T"], capture_output=True,
                         text=True)
    return dict(line.split()[:2] for line in out.stdout.splitlines()).get(job, "")


@slurm
@pytest.mark.slow
def test_slurm_job_array_equals_one_process_and_a_cancelled_task_resumes(small_corpus, models, reference, tmp_path):
    # 1. three array tasks, waited for: the cache equals the single-process one
    out = tmp_path / "cache"
    proc = sercache_cli(*extract_args(small_corpus, out, models, "--executor", "slurm", "--shards", "3", "--wait",
                                      "--slurm-time", "0:30:00", streams=STREAMS))
    assert "as SLURM job array" in proc.stdout and "3 done" in proc.stdout
    assert_same_features(out, reference)
    script = next(out.glob(".jobs/*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-2" in script and "#SBATCH --time=30" in script
    no_pickles_left(out)

    # 2. task 2 is held at its setup line until `go` exists; it is cancelled while SLURM runs it
    out2, go = tmp_path / "cache2", tmp_path / "go"
    gate = (f'if [ "$SLURM_ARRAY_TASK_ID" = 1 ] && [ ! -e {go} ]; then echo "gate: holding task 1" >&2; '
            f"while [ ! -e {go} ]; do sleep 0.2; done; fi")
    waiter = subprocess.Popen([sys.executable, "-m", "sercache", *extract_args(
        small_corpus, out2, models, "--executor", "slurm", "--shards", "3", "--wait", "--slurm-setup", gate,
        streams=STREAMS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    record = None
    while record is None or len(list(record.parent.glob("shard-*.json"))) < 2:  # tasks 1 and 3 finish
        record = next(out2.glob(".jobs/*/submission.json"), None)
        assert waiter.poll() is None, waiter.communicate()
        time.sleep(0.2)
    job = json.loads(record.read_text())["job_ids"]["2"]
    log = Path(json.loads(record.read_text())["logs"]["2"]["stderr"])
    while not (log.exists() and "gate: holding" in log.read_text()):
        assert waiter.poll() is None, waiter.communicate()
        time.sleep(0.2)
    assert _squeue(job) == "RUNNING"
    subprocess.run(["scancel", job], check=True)
    stdout, stderr = waiter.communicate(timeout=600)
    assert waiter.returncode == 1, stdout + stderr  # --wait saw the cancelled task and said so

    status = sercache_cli("cache", "status", str(out2), check=False)
    assert status.returncode == 1
    assert "shard 2/3  failed" in status.stdout and "CANCELLED" in status.stdout, status.stdout
    assert status.stdout.count(" done ") == 2
    command = status.stdout.strip().splitlines()[-1].strip()
    assert command.startswith("sercache extract") and command.endswith("--only-shards 2")
    go.touch()
    again = sercache_cli(*shlex.split(command)[1:])
    assert "submitted 1 shard task(s) of 3" in again.stdout
    final = sercache_cli("cache", "status", str(out2))
    assert final.stdout.count(" done ") == 3 and "every shard is done" in final.stdout
    assert_same_features(out2, reference)
    no_pickles_left(out2)
