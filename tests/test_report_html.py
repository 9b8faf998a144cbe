"""`sercache report --html`: one self-contained page whose tables agree with the Markdown report, whose
figures are drawn from the runs' records, and which a real browser (headless Chromium) shows cleanly."""
from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sercache.cli import cli
from sercache.runs import report_plots
from sercache.runs.report import make_report
from sercache.runs.report_tables import chance_line
from sercache.runs.results import load_run
from sercache.training.metrics import CLASSIFICATION
from tests.browser import ink_fraction, render, require_or_skip
from tests.conftest import synthetic_manifest, write_signal_cache
from tests.test_report import _md_table
from tests.test_train import FAST, train

CLASSES = ["neutral", "happy", "sad", "angry"]


class Page(HTMLParser):
    """Tags with their attributes, and every table's cells as text (a CI on its own line joined by a space)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def frame(self, i: int) -> pd.DataFrame:
        rows = self.tables[i]
        return pd.DataFrame(rows[1:], columns=rows[0])

    def find(self, columns: list[str], start: int = 0) -> int:
        """Index of the first table from ``start`` with these header cells."""
        return next(i for i in range(start, len(self.tables)) if self.tables[i][0] == columns)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """linear, mlp and wsum on the same folds (1, 2) and seeds (0, 1): paired differences; wsum over 3 layers.
    A weak planted signal on 120 utterances: fast, and leaves errors (and differences between runs) to show."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("html_runs")
    cache = write_signal_cache(root / "cache", synthetic_manifest(n_per_speaker_label=3), signal=0.3)
    return [train(cache, root / head, head, seeds=2, train={**FAST[head], "epochs": epochs})[0]
            for head, epochs in (("linear", 8), ("mlp", 8), ("wsum", 4))]


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("html") / "report.html"
    text = make_report(runs, n_boot=50, html=path)
    return path, text


def _png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")


def test_page_is_self_contained_with_every_figure(runs, page):
    path, _ = page
    doc = Page(path.read_text())
    for tag, attrs in doc.tags:  # nothing fetched at view time: no script, stylesheet link, or outside URL
        assert tag not in ("script", "link", "iframe", "object"), tag
        for key in ("src", "href"):
            assert key not in attrs or attrs[key].startswith("data:"), (tag, attrs.get(key, "")[:60])
    style = re.search(r"<style>(.*?)</style>", path.read_text(), re.S).group(1)
    assert "url(" not in style and "@import" not in style

    images = {attrs["alt"]: _png(attrs["src"]) for tag, attrs in doc.tags if tag == "img"}
    names = [r.name for r in runs]
    expected = {"test UA per fold", *[f"confusion matrices of {n}" for n in names],
                *[f"training curves of {n}" for n in names], "learned layer weights of wsum",
                "paired differences mlp - linear", "paired differences wsum - linear"}
    assert set(images) == expected
    for alt, im in images.items():
        pixels = np.asarray(im, float)
        assert im.width >= 300 and im.height >= 200 and pixels.std() > 10, alt  # drawn, not an empty canvas
    assert images["training curves of linear"].width > 2 * images["test UA per fold"].width - 100  # a full row


def test_header_and_tables_match_the_markdown_report(runs, page):
    path, md = page
    doc = Page(path.read_text())
    text = " ".join(" ".join(doc.text).split())
    for run_dir in runs:
        run = load_run(run_dir)
        assert "chance " + chance_line(run).partition(": ")[2] in text  # shown as a name and its value
        assert f"iemocap4 ({', '.join(CLASSES)})" in text  # the label preset, named with its classes
        assert "speaker-independent: yes" in text and "text source none (no text stream)" in text
        assert f"audio: ssl layer(s) {','.join(map(str, run.config['encoders']['audio']['layers']))}" in text
    assert "audio: ssl layer(s) 0,1,2" in text  # wsum weighs every stored layer

    main = doc.frame(doc.find(["run", "head", "folds x seeds", *[m.label for m in CLASSIFICATION], "pooled WA",
                               "pooled UA"]))  # every metric of the one list (metrics.METRICS), in its order
    expected = _md_table(md, "Metrics in %")
    pd.testing.assert_frame_equal(main, expected)
    assert all(re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]", v) for v in main.UA)  # CIs shown

    at = 0
    for run_dir in runs:
        name = run_dir.name
        per_fold = doc.frame(at := doc.find(["fold", "UA", "WA", "test utts", "best epoch", "s/epoch",
                                             "test inference s"], at))
        md_fold = _md_table(md, f"{name}: per fold").rename(columns={"": "fold"})
        pd.testing.assert_frame_equal(per_fold, md_fold)
        per_class = doc.frame(at := doc.find(["class", "recall", "pooled recall", "support"], at))
        pd.testing.assert_frame_equal(per_class, _md_table(md, f"{name}: per-class recall"))
        assert list(per_class["class"]) == CLASSES

    header = ["metric", "n pairs", "mean diff (pp)", "std (pp)", "paired t p", "Wilcoxon p"]
    found = [i for i, t in enumerate(doc.tables) if t[0] == header]
    assert len(found) == 2  # mlp and wsum, each against the first run
    for i, other in zip(found, ("mlp", "wsum")):
        paired = doc.frame(i)
        pd.testing.assert_frame_equal(paired, _md_table(md, f"Paired differences, {other} - linear"))
        assert list(paired["n pairs"]) == ["4"] * len(CLASSIFICATION)  # 2 folds x 2 seeds, one row per metric


def test_layer_weights_and_curves_come_from_the_records(runs, page):
    path, _ = page
    wsum = load_run(runs[2])
    weights = report_plots.layer_weights(wsum)
    assert len(weights) == 4 * 3  # 2 folds x 2 seeds x 3 layers
    for (fold, seed), g in weights.groupby(["fold", "seed"]):
        state = torch.load(runs[2] / fold / f"seed{seed}" / "checkpoint.pt", weights_only=True)["state_dict"]
        np.testing.assert_allclose(g.weight, torch.softmax(state["layer_weights"], 0).numpy(), rtol=1e-6)
        assert list(g.layer) == [0, 1, 2]
    assert not np.allclose(weights.weight, 1 / 3)  # trained away from the zero-logit (uniform) start
    mean = weights.groupby("layer").weight.mean()
    assert f"Mean per layer: {', '.join(f'{k}: {v:.3f}' for k, v in mean.items())}." in path.read_text()
    assert report_plots.layer_weights(load_run(runs[0])) is None  # linear: no layer weights

    linear = load_run(runs[0])
    curves = report_plots.read_curves(linear)
    assert curves.groupby(["fold", "seed"]).ngroups == 4 and set(curves.phase) == {"select"}
    for r in linear.metrics.itertuples():  # the marked epoch is the best validation UA of that curve
        c = curves[(curves.fold == r.fold) & (curves.seed == r.seed)]
        assert c.valid_ua.max() == pytest.approx(c.loc[c.epoch == r.best_epoch, "valid_ua"].item())


def test_cli_html_with_a_closed_form_run_and_bad_paths(runs, tmp_path):
    svm, _ = train(runs[0].parent / "cache", tmp_path / "svm", "svm", fold="1", seeds=1)
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["report", str(svm), "--html", str(out), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "| svm" in result.stdout and f"wrote {out}" in result.stderr
    alts = {a["alt"] for t, a in Page(out.read_text()).tags if t == "img"}
    assert alts == {"test UA per fold", "confusion matrices of svm"}  # closed form: no epochs, no curves
    unpaired = tmp_path / "unpaired.html"
    make_report([runs[0], svm], n_boot=10, html=unpaired)  # folds 1,2 vs fold 1: said, not tested or plotted
    assert "svm vs linear: folds differ (not the same test utterances); no paired test" in unpaired.read_text()
    assert not [a for t, a in Page(unpaired.read_text()).tags if t == "img" and a["alt"].startswith("paired")]
    import sercache

    assert "| svm" in sercache.report([svm], n_boot=10, html=tmp_path / "api.html")  # the Python API's option
    assert Page((tmp_path / "api.html").read_text()).tables[0][0][0] == "run"

    missing = tmp_path / "nowhere" / "page.html"
    result = CliRunner().invoke(cli, ["report", str(runs[0]), "--html", str(missing)])
    assert result.exit_code == 2 and f"error: --html {missing}: the folder {missing.parent} does not exist" in result.output
    result = CliRunner().invoke(cli, ["report", str(runs[0]), "--html", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder: give a file name" in result.output
    assert not missing.parent.exists()


def test_page_renders_in_chromium(page, tmp_path):
    require_or_skip()
    path, _ = page
    shot = render(path, tmp_path / "shot.png")
    assert shot.errors == [] and shot.console == [], shot.console
    assert shot.title == "sercache report: linear, mlp, wsum"
    n_img = sum(1 for tag, _ in Page(path.read_text()).tags if tag == "img")
    assert len(shot.images) == n_img == 10  # UA per fold, 2 paired, 3 confusion, 3 curves, layer weights
    assert all(i["complete"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0 for i in shot.images), shot.images
    with Image.open(shot.screenshot) as im:
        assert im.size == (1280, shot.page_height) and shot.page_height > 2000  # the whole page was captured
    assert ink_fraction(shot.screenshot) > 0.03  # text and figures, not a blank page


def test_browser_check_catches_a_broken_page(tmp_path):
    """The checks above can fail: a console error, an image that does not decode, a blank page are each seen."""
    require_or_skip()
    broken = tmp_path / "broken.html"
    broken.write_text('<!doctype html><html><head><title>t</title></head><body style="background:#fff">'
                      '<img alt="bad" src="data:image/png;base64,bm90IGEgcG5n">'
                      '<script>console.error("boom")</script></body></html>')
    shot = render(broken, tmp_path / "broken.png")
    assert any("boom" in e["message"] for e in shot.errors)
    assert shot.images == [{"alt": "bad", "complete": True, "naturalWidth": 0, "naturalHeight": 0}]
    assert ink_fraction(shot.screenshot) < 0.01  # a broken-image icon on a white page: blank


@pytest.mark.parametrize("n_folds, rows", [(2, 1), (10, 2), (30, 1)])
def test_curves_and_ua_figures_stay_a_page_wide_with_many_folds(tmp_path, n_folds, rows):
    """EmoDB's 10 speakers wrap onto 2 rows of panels; CREMA-D-sized fold counts are overlaid in one panel pair."""
    from sercache.runs.record import RunRecord

    folds = [f"lospk-{i:02d}" for i in range(n_folds)]
    rng = np.random.default_rng(0)
    for fold in folds:
        (tmp_path / fold / "seed0").mkdir(parents=True)
        pd.DataFrame({"phase": "select", "epoch": range(1, 6), "train_loss": np.linspace(1.4, 0.5, 5),
                      "valid_loss": np.linspace(1.4, 1.0, 5), "valid_ua": rng.uniform(0.3, 0.6, 5)}).to_csv(
            tmp_path / fold / "seed0" / "curve.csv", index=False)
    metrics = pd.DataFrame({"fold": folds, "seed": 0, "best_epoch": 3, "ua": rng.uniform(0.3, 0.6, n_folds)})
    predictions = pd.DataFrame({"utt_id": [f"u{i}" for i in range(4 * n_folds)], "label": np.tile(range(4), n_folds),
                                "pred": np.tile(range(4), n_folds), "fold": np.repeat(folds, 4), "seed": 0})
    run = RunRecord(tmp_path, {"head": "linear", "labels": {"classes": CLASSES}}, metrics, predictions,
                     {f: [] for f in folds})
    curves = Image.open(io.BytesIO(report_plots.curves_figure(run)))
    assert curves.size == (round(report_plots.WIDE * report_plots.DPI), round(rows * 4.6 * report_plots.DPI))
    ua = Image.open(io.BytesIO(report_plots.ua_per_fold_figure([run])))
    assert ua.width <= report_plots.WIDE * report_plots.DPI


def test_whole_best_epochs_shared_curve_scales_and_one_colour_meaning(runs, monkeypatch):
    """Issue 21: "best epoch" 2, not 2.0; every fold's curve panel on one scale; a hue means a run everywhere."""
    from matplotlib.colors import rgb_to_hsv, to_rgb

    from sercache.runs.summary import per_fold_table

    loaded = [load_run(r) for r in runs]
    for run in loaded:
        assert all(re.fullmatch(r"\d+(–\d+)?", v) for v in per_fold_table(run)["best epoch"]), per_fold_table(run)
    figures: list = []
    monkeypatch.setattr(report_plots, "to_png", lambda fig: figures.append(fig) or b"")

    def hsv(colour) -> np.ndarray:  # noqa: ANN001 - any matplotlib colour
        return rgb_to_hsv(np.array(to_rgb(colour)))

    report_plots.curves_figure(loaded[1], 1)
    curves = figures.pop()
    loss, ua = curves.axes[:2], curves.axes[2:4]  # 2 folds: the loss row, then the validation-UA row
    assert loss[0].get_ylim() == loss[1].get_ylim() and ua[0].get_ylim() == ua[1].get_ylim()
    hue = hsv(report_plots.run_colour(1))[0]
    lines = [line for ax in curves.axes for line in ax.get_lines()]
    assert lines and all(abs(hsv(line.get_color())[0] - hue) < 0.02 for line in lines)  # shades of run 1's hue

    report_plots.paired_figure(loaded[0], loaded[1])
    paired = figures.pop()
    assert all(hsv(line.get_color())[1] == 0 for line in paired.axes[0].get_lines())  # black and grey only

    report_plots.layer_weights_figure(report_plots.layer_weights(loaded[2]), 2)
    bars = figures.pop().axes[0].patches
    assert bars and all(np.allclose(to_rgb(b.get_facecolor()), to_rgb(report_plots.run_colour(2))) for b in bars)
