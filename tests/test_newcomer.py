"""A newcomer's first hour: the demo learns, the notebook runs on its output, the examples stay valid."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from sercache.cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_prints_the_training_settings_it_uses(demo):
    for head, run in demo.runs.items():
        line = next(m for m in demo.said if m.strip().startswith(f"sercache train {demo.cache} --head {head} "))
        words = shlex.split(line)
        config = json.loads((run / "config.json").read_text())["train"]
        for option, key in (("--lr", "lr"), ("--batch-size", "batch_size"), ("--epochs", "epochs"),
                            ("--patience", "patience")):
            assert float(words[words.index(option) + 1]) == config[key], (head, option)


@pytest.mark.slow
def test_demo_learns_well_above_chance(demo):
    """Random stand-in encoders, synthetic emotional speech: the real pipeline must still learn (chance: 25%)."""
    for head, run in demo.runs.items():
        results = [json.loads(p.read_text()) for p in run.glob("loso-*/seed0/metrics.json")]
        assert len(results) == 5, head  # 5-fold LOSO
        mean_ua = sum(r["ua"] for r in results) / 5
        assert mean_ua >= 0.45, (head, mean_ua)
    assert "Paired differences, cmgi - gate" in demo.report
    # early stopping ends every fold before the epoch cap: the demo's own report must not call it undertrained
    assert "undertrained" not in demo.report, demo.report
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_demo_rerun_reuses_everything(demo):
    from sercache.demo import run_demo

    lines = []
    stamp = (demo.runs["gate"] / "loso-1" / "seed0" / "DONE").stat().st_mtime_ns
    again = run_demo(demo.out, progress=False, say=lines.append)
    assert (demo.runs["gate"] / "loso-1" / "seed0" / "DONE").stat().st_mtime_ns == stamp
    assert again.report.split("Confusion")[0] == demo.report.split("Confusion")[0]
    assert "RANDOM stand-in models" in lines[0]


@pytest.mark.slow
def test_each_demo_run_replays_its_own_config_into_its_own_directory(demo, tmp_path):
    """#23.9: the demo's runs (made through the Python API) replay exactly, as CLI-made runs do."""
    import shutil

    from click.testing import CliRunner

    for head, run in demo.runs.items():
        copy = shutil.copytree(run, tmp_path / head)  # the demo fixture is read-only
        result = CliRunner().invoke(cli, ["train", "--config", str(copy / "config.json"), "--out", str(copy),
                                          "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "replaying a recorded run with the same settings" in result.output
        assert "0 to train" in result.output


def run_notebook(cache: Path, run: Path, workdir: Path) -> list[dict]:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / "cache_analysis.ipynb", as_version=4)
    env = {"SERCACHE_CACHE": str(cache), "SERCACHE_RUN": str(run)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs


@pytest.mark.slow
def test_notebook_executes_on_the_demo_cache(demo, tmp_path):
    outputs = run_notebook(demo.cache, demo.runs["gate"], tmp_path)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # distributions, layer curve, t-SNE, WER, confusion matrix
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    assert "UA %" in text and "WER %" in text
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "comes from a random stand-in model" in printed


@pytest.mark.slow
def test_notebook_executes_on_a_speaker_only_cache(tmp_path):
    """An EmoDB-like cache (speakers, no sessions): the probe groups by speaker instead of failing."""
    from tests.conftest import synthetic_manifest, write_signal_cache

    manifest = synthetic_manifest(n_per_speaker_label=2).assign(corpus="emodb", session="")
    names = {"neu": "neutral", "hap": "happiness", "sad": "sadness", "ang": "anger"}
    cache = write_signal_cache(tmp_path / "cache", manifest.assign(label=manifest.label.map(names)))
    outputs = run_notebook(cache, tmp_path / "no-run", tmp_path)
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    assert "UA %" in text


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
            path = workdir / missing[0]
            if path.suffix in (".json", ".yaml", ".yml"):  # a file option (--config)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
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


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "examples").glob("*.sh") if not p.name.startswith("_")))
def test_example_dry_run_needs_no_corpus_and_takes_local_models(script, tmp_path):
    env = {**os.environ, "SSL_MODEL": str(tmp_path / "my-hubert"), "ASR_MODEL": str(tmp_path / "my-ctc"),
           "TEXT_MODEL": str(tmp_path / "my-bert")}
    proc = subprocess.run(["bash", str(REPO / "examples" / script), "--dry-run"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    extracts = [line for line in proc.stdout.splitlines() if line.startswith("sercache extract ")]
    assert extracts and all("CORPUS_ROOT" in line for line in extracts)
    for line in extracts:
        words = shlex.split(line)
        streams = words[words.index("--streams") + 1].split(",")
        if "ssl" in streams:  # every model the command uses is the one given, never a hard-coded id
            assert words[words.index("--ssl-model") + 1] == env["SSL_MODEL"], line
        if "asr" in streams:
            assert words[words.index("--asr-model") + 1] == env["ASR_MODEL"], line
        if {"text_asr", "text_gold"} & set(streams):
            assert words[words.index("--text-model") + 1] == env["TEXT_MODEL"], line


@pytest.mark.slow
def test_the_readme_headless_notebook_command_works(demo, tmp_path):
    import shutil

    if shutil.which("jupyter") is None or subprocess.run(["jupyter", "nbconvert", "--version"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("jupyter nbconvert is not installed (the notebook extra)")
    env = {**os.environ, "SERCACHE_CACHE": str(demo.cache), "SERCACHE_RUN": str(demo.runs["gate"])}
    proc = subprocess.run(["jupyter", "nbconvert", "--to", "notebook", "--execute",
                           str(REPO / "notebooks" / "cache_analysis.ipynb"), "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "cache_analysis.ipynb").stat().st_size > 10_000


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out += _commands(cmd, (*prefix, name)) if isinstance(cmd, click.Group) else [(*prefix, name)]
    return out


@pytest.mark.parametrize("command", _commands(cli), ids=" ".join)
def test_every_command_help_has_examples_and_every_option_says_what_it_does(command):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=120)
    assert result.exit_code == 0 and "Examples:" in result.output
    cmd = cli
    for name in command:
        cmd = cmd.commands[name]
    undocumented = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help and not p.hidden
]
    assert not undocumented, undocumented
    if command == ("train",):
        for heading in ("Model:", "Data:", "Folds and validation:", "Optimisation (defaults: the head's",
                        "Running and output:"):
            assert heading in result.output


def readme_commands(prefix: str) -> list[list[str]]:
    """Every command starting with ``prefix`` in the bash blocks of README and docs/ (continuations joined,
    comments cut)."""
    import re

    from tests.documentation import documentation_text

    text = documentation_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                part = re.sub(r"^(\w+=\S+\s+)+", "", part)  # leading VAR=value assignments
                if part.startswith(prefix):
                    out.append(shlex.split(part.replace("$s", "1")))
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):  # inline commands
        if span.startswith(prefix) and prefix.startswith("python "):  # inline `sercache x` only names a command
            out.append(shlex.split(span))
    return out


def test_every_readme_sercache_command_parses_with_the_real_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = readme_commands("sercache ")
    assert len(commands) >= 20
    for command in commands:
        _validate(command, tmp_path)


def test_every_readme_benchmark_command_names_real_options():
    commands = readme_commands("python benchmarks/")
    assert len(commands) >= 8
    for command in commands:
        script = REPO / command[1]
        assert script.exists(), command
        options = [w.split("=")[0] for w in command[2:] if w.startswith("--") and " " not in w]
        if options:
            shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                   cwd=REPO / "benchmarks")
            assert shown.returncode == 0, shown.stderr
            missing = [o for o in options if o not in shown.stdout]
            assert not missing, (command, missing)
