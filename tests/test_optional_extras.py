"""Tests of the `cluster` extra (submitit, dask) skip cleanly where it is not installed, and fail under
SERCACHE_REQUIRE_SLURM=1 (what `.ci/run` sets), like the browser test with SERCACHE_REQUIRE_BROWSER."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A sitecustomize module that makes submitit and dask uninstalled, in the pytest process it is given to.
BLOCK = """import sys

class NoClusterExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("submitit", "dask", "distributed"):
            raise ImportError(f"No module named {name!r} (blocked by tests/test_optional_extras.py)")
        return None

sys.meta_path.insert(0, NoClusterExtra())
"""

#: Marked as the cluster and sweep tests are; the bodies need the extra, as theirs do.
PROBE = """from tests.test_cluster import cluster_extra, slurm


@slurm
def test_needs_slurm_and_submitit():
    import submitit  # noqa: F401


@cluster_extra("dask.distributed")
def test_needs_dask():
    import dask.distributed  # noqa: F401
"""


@pytest.mark.parametrize("required, outcome", [(None, "2 skipped"), ("1", "2 failed")])
def test_cluster_tests_skip_without_the_extra_unless_required(tmp_path, required, outcome):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK)
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "SERCACHE_REQUIRE_SLURM"}
    env["PYTHONPATH"] = os.pathsep.join([str(block), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if required:
        env["SERCACHE_REQUIRE_SLURM"] = required
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(probe)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    if not required:
        assert proc.returncode == 0, proc.stdout
