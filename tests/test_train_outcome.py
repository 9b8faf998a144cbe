"""The train command's summary and exit status are a library call (outcome.training_outcome)."""
from __future__ import annotations

from sercache.training.outcome import training_outcome


def test_every_task_trained_exits_0():
    out = training_outcome("runs/x", [{"fold": "loso-1", "seed": 0, "ok": True}, {"fold": "loso-2", "seed": 0, "ok": True}])
    assert out.exit_code == 0 and out.failures == []
    assert out.summary == "run: runs/x  (2 fold/seed trained, 0 failed); `sercache report runs/x` for the table"


def test_a_failed_task_is_named_and_exits_1():
    out = training_outcome("r", [{"fold": "loso-1", "seed": 0, "ok": True},
                                 {"fold": "loso-2", "seed": 1, "ok": False, "error": "OSError: disk full"}])
    assert out.exit_code == 1 and "(1 fold/seed trained, 1 failed)" in out.summary
    assert out.failures == ["failed: loso-2 seed 1: OSError: disk full"]
