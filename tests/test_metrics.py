"""Metrics against scikit-learn's reference implementations and direct formulas."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, f1_score, recall_score

from sercache.training.metrics import bootstrap_ci, ccc, classification_metrics, confusion, paired_comparison, per_class_recall


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k, 200)
    if seed % 2:
        y[y == 3] = 2  # a class absent from the truth
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    m = classification_metrics(y, pred, k)
    present = np.unique(y)
    assert m["wa"] == pytest.approx(accuracy_score(y, pred))
    assert m["ua"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=present))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))


def test_kappa_is_nan_where_chance_agreement_is_certain():
    y = np.zeros(10, int)
    assert np.isnan(classification_metrics(y, y, 3)["kappa"])  # sklearn: 0/0 as well


def test_wa_and_ua_are_not_inverted():
    y = np.array([0] * 90 + [1] * 10)
    pred = np.zeros(100, int)  # always the majority class
    m = classification_metrics(y, pred, 2)
    assert m["wa"] == pytest.approx(0.9) and m["ua"] == pytest.approx(0.5)


def test_ccc_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    y = 0.7 * x + 0.3 + rng.normal(scale=0.5, size=500)
    expected = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert ccc(x, y) == pytest.approx(expected)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, x + 1) < 1.0  # a shift is penalised, unlike Pearson's r
    assert ccc(np.array([1.0, np.nan, 2.0, 3.0]), np.array([1.0, 5.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_bootstrap_ci_brackets_the_estimate_and_narrows():
    rng = np.random.default_rng(0)

    def run(n: int):
        y = rng.integers(0, 4, n)
        return y, np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, n))

    small = [run(50) for _ in range(3)]
    large = [run(2000) for _ in range(3)]
    for runs in (small, large):
        ci = bootstrap_ci(runs, 4, n_boot=300)
        mean_ua = np.mean([classification_metrics(t, p, 4)["ua"] for t, p in runs])
        assert ci["ua"][0] < mean_ua < ci["ua"][1]
    ci_s, ci_l = bootstrap_ci(small, 4, n_boot=300), bootstrap_ci(large, 4, n_boot=300)
    assert ci_l["wa"][1] - ci_l["wa"][0] < ci_s["wa"][1] - ci_s["wa"][0]


def test_paired_comparison_matches_scipy():
    a = np.array([0.70, 0.72, 0.68, 0.75, 0.71, 0.69])
    b = np.array([0.66, 0.70, 0.69, 0.70, 0.68, 0.64])
    r = paired_comparison(a, b)
    assert r["mean_diff"] == pytest.approx((a - b).mean())
    assert r["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


@pytest.mark.parametrize("seed", range(4))
def test_per_class_recall_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k, 150)
    if seed % 2:
        y[y == 1] = 0  # a class absent from the truth: NaN here, 0 in scikit-learn
    pred = np.where(rng.random(150) < 0.5, y, rng.integers(0, k, 150))
    recall = per_class_recall(confusion(y, pred, k))
    present = np.isin(np.arange(k), y)
    expected = recall_score(y, pred, labels=range(k), average=None, zero_division=0)
    np.testing.assert_allclose(recall[present], expected[present])
    assert np.isnan(recall[~present]).all()
