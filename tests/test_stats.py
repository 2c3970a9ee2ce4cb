"""The statistics agree with scipy (and with textbook values) on fixed numbers."""

import math

import numpy as np
import pytest
from scipy import stats as sp

from cifar_exp.stats import (
    accuracy_interval,
    compare,
    mcnemar,
    prediction_interval,
    summarize,
)

A = [0.652, 0.661, 0.648, 0.659, 0.655]
B = [0.641, 0.650, 0.637, 0.652, 0.644]


def test_summary_is_the_t_interval_of_the_mean():
    s = summarize(A)
    x = np.array(A)
    low, high = sp.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sp.sem(x))
    assert (s.n, s.mean, s.std) == (5, pytest.approx(x.mean()), pytest.approx(x.std(ddof=1)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert s.contains(x.mean()) and not s.contains(0.7)
    assert "± " in s.text() and "5 seeds" in s.text()


def test_one_value_has_no_interval():
    s = summarize([0.5])
    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == (1, 0.5, None, None, None)
    assert s.text() == "0.5000 (1 seed)" and s.contains(0.5) is None


def test_comparison_is_welchs_t_test():
    c = compare(A, B)
    ref = sp.ttest_ind(A, B, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert c.diff == pytest.approx(np.mean(A) - np.mean(B))
    assert (c.statistic, c.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert (c.ci_low, c.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert c.significant(0.05) and not compare(A, A).significant(0.05)
    # single runs are not tested
    assert compare([0.6], [0.5]).p_value is None


def test_prediction_interval_is_wider_than_the_mean_interval():
    low, high = prediction_interval(A)
    x = np.array(A)
    half = sp.t.ppf(0.975, 4) * x.std(ddof=1) * math.sqrt(1 + 1 / 5)
    assert (low, high) == (pytest.approx(x.mean() - half), pytest.approx(x.mean() + half))
    s = summarize(A)
    assert low < s.ci_low and high > s.ci_high
    assert prediction_interval([0.5]) is None


def test_accuracy_interval_is_wilsons():
    low, high = accuracy_interval(80, 100)
    # Wilson score interval, z = 1.96: 0.7112 to 0.8666
    assert (low, high) == (pytest.approx(0.7112, abs=1e-4), pytest.approx(0.8666, abs=1e-4))
    ref = sp.binomtest(80, 100).proportion_ci(0.95, method="wilson")
    assert (low, high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_mcnemar_is_the_exact_binomial_test_on_discordant_images():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0], bool)
    r = mcnemar(a, b)
    assert (r.only_a, r.only_b) == (6, 1)
    assert r.p_value == pytest.approx(sp.binomtest(6, 7, 0.5).pvalue)
    assert mcnemar(a, a).p_value == 1.0  # identical predictions: no evidence at all
    with pytest.raises(ValueError):
        mcnemar(a, b[:5])
