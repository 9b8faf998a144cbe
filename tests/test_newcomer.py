"""A newcomer's first hour: the demo learns, the notebook runs on its output, the examples stay valid."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import click
import pytest

from sercache.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    from sercache.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo") / "out", jobs=2, progress=False, say=lambda m: None)


def test_demo_learns_well_above_chance(demo):
    """Random stand-in encoders, synthetic emotional speech: the real pipeline must still learn (chance: 25%)."""
    for head, run in demo.runs.items():
        results = [json.loads(p.read_text()) for p in run.glob("loso-*/seed0/metrics.json")]
        assert len(results) == 5, head  # 5-fold LOSO
        mean_ua = sum(r["ua"] for r in results) / 5
        assert mean_ua >= 0.45, (head, mean_ua)
    assert "Paired differences, cmgi - gate" in demo.report
    corpus = demo.corpus
    assert sorted(p.name for p in corpus.iterdir()) == [f"Session{k}" for k in range(1, 6)]
    assert list(corpus.glob("Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"))
    assert list(corpus.glob("Session3/sentences/wav/Ses03M_*/Ses03M_*_F000.wav"))


def test_demo_corpus_has_iemocaps_class_imbalance():
    """IEMOCAP 4-class shares (neutral 30.9%, happy 29.6% = hap + exc, angry 19.9%, sad 19.6%) in 200 utterances."""
    from collections import Counter

    from sercache.demo import DEMO_CORPUS
    from sercache.synthetic.corpus import iemocap_like

    utts = iemocap_like(**DEMO_CORPUS)
    counts = Counter(u.label for u in utts)
    assert counts == {"neu": 62, "hap": 21, "exc": 38, "sad": 39, "ang": 40}
    assert len({u.utt_id for u in utts}) == len(utts) == 200
    real = {"neutral": 1708 / 5531, "happy": 1636 / 5531, "angry": 1103 / 5531, "sad": 1084 / 5531}
    ours = {"neutral": counts["neu"], "happy": counts["hap"] + counts["exc"], "angry": counts["ang"], "sad": counts["sad"]}
    assert all(abs(ours[c] / 200 - real[c]) < 0.005 for c in real), ours
    per_session = Counter((u.session, u.label) for u in utts)
    assert all(per_session[s, code] >= 4 for s in range(1, 6) for code in counts)  # every LOSO test fold has every class


def test_demo_report_shows_imbalance(demo):
    """WA and UA differ (and so do their chance levels), as on the real corpus."""
    assert "chance: UA 25.00% (1/k, k=4); WA 31.00% (majority class neutral in the test sets: 62 of 200" in demo.report
    assert "| happy" in demo.report.split("gate: per-class recall")[1]  # exc and hap merged into happy
    rows = [line.split("|") for line in demo.report.splitlines() if line.startswith(("| gate ", "| cmgi "))]
    assert len(rows) == 2
    for row in rows:
        wa, ua = row[4].split("±")[0].strip(), row[5].split("±")[0].strip()
        assert wa != ua, row
    assert len(list(demo.corpus.glob("Session*/sentences/wav/*/*.wav"))) == 200
    assert any("\texc\t" in p.read_text() for p in demo.corpus.glob("Session*/dialog/EmoEvaluation/*.txt"))


def test_demo_rerun_reuses_everything(demo):
    from sercache.demo import run_demo

    lines = []
    stamp = (demo.runs["gate"] / "loso-1" / "seed0" / "DONE").stat().st_mtime_ns
    again = run_demo(demo.out, progress=False, say=lines.append)
    assert (demo.runs["gate"] / "loso-1" / "seed0" / "DONE").stat().st_mtime_ns == stamp
    assert again.report.split("Confusion")[0] == demo.report.split("Confusion")[0]
    assert "RANDOM stand-in models" in lines[0]


def test_notebook_executes_on_the_demo_cache(demo, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / "cache_analysis.ipynb", as_version=4)
    env = {"SERCACHE_CACHE": str(demo.cache), "SERCACHE_RUN": str(demo.runs["gate"])}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # distributions, layer curve, t-SNE, WER, confusion matrix
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    assert "UA" in text and "wer" in text


def _validate(command: list[str], workdir: Path) -> None:
    """Parse a `sercache ...` command with the real CLI (options, choices, types); create missing paths."""
    assert command[0] == "sercache", command
    name, args = command[1], command[2:]
    cmd = cli.commands[name]
    if isinstance(cmd, click.Group):
        name, args = args[0], args[1:]
        cmd = cmd.commands[name]
    for _ in range(len(args) + 1):
        try:
            cmd.make_context(name, list(args))
            return
        except click.BadParameter as exc:
            missing = [a for a in args if f"'{a}' does not exist" in str(exc)]
            if not missing:
                raise
            (workdir / missing[0]).mkdir(parents=True, exist_ok=True)
    raise AssertionError(f"could not validate {command}")


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "examples").glob("*.sh") if not p.name.startswith("_")))
def test_example_scripts_dry_run_valid_commands(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "IEMOCAP_full_release"
    root.mkdir()
    out = subprocess.run(["bash", str(REPO / "examples" / script), str(root), "cache", "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("sercache ")]
    assert commands, out
    assert any(c[1] == "extract" for c in commands)
    for command in commands:
        _validate(command, tmp_path)
    text = (REPO / "examples" / script).read_text()
    assert "Usage:" in text and "--dry-run" in text
