"""The statistics behind every number that decides something, all from scipy.stats (what is
used where, and why: docs/statistics.md):

- `summarize`: mean, standard deviation and the 95 % t-interval of the mean of a few seeds'
  values (`scipy.stats.t`; a bootstrap needs far more than the 2-10 seeds a study affords).
- `compare`: Welch's t-test of two settings' seed values, with the 95 % interval of the
  difference of means (`scipy.stats.ttest_ind(equal_var=False)`: no equal-variance assumption).
- `prediction_interval`: where one more run of a setting falls with 95 % probability (t-based),
  for "does the original value lie within what a replication gives".
- `accuracy_interval`: Wilson's 95 % interval of an accuracy measured on n images
  (`scipy.stats.binomtest(...).proportion_ci("wilson")`).
- `mcnemar`: McNemar's exact test of two models on the same images: the images exactly one of
  them gets right, split by a binomial test (`scipy.stats.binomtest`), which is McNemar's exact
  form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Summary:
    """Seed values of one setting: n, mean, sample standard deviation and the 95 % interval of
    the mean (None with a single value: one run has no interval)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    def text(self, digits: int = 4) -> str:
        """`0.6512 ± 0.0123 (95 % CI, 3 seeds)` or `0.6512 (1 seed)`."""
        if self.ci_low is None:
            return f"{self.mean:.{digits}f} (1 seed)"
        half = (self.ci_high - self.ci_low) / 2
        return f"{self.mean:.{digits}f} ± {half:.{digits}f} (95 % CI, {self.n} seeds)"

    def contains(self, value: float) -> bool | None:
        if self.ci_low is None:
            return None
        return self.ci_low <= value <= self.ci_high


def summarize(values: Sequence[float]) -> Summary:
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values to summarize")
    mean = float(x.mean())
    if len(x) == 1:
        return Summary(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    if std == 0:
        return Summary(len(x), mean, 0.0, mean, mean)
    low, high = stats.t.interval(LEVEL, len(x) - 1, loc=mean, scale=std / math.sqrt(len(x)))
    return Summary(len(x), mean, std, float(low), float(high))


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of a against b: the difference of means (a - b) with its 95 % interval,
    the t statistic and the two-sided p-value (None where a side has fewer than 2 values)."""

    diff: float
    ci_low: float | None
    ci_high: float | None
    statistic: float | None
    p_value: float | None

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value is not None and self.p_value < alpha


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Comparison(diff, None, None, None, None)
    if x.std(ddof=1) == 0 and y.std(ddof=1) == 0:  # no spread at all: t is undefined
        p = 1.0 if diff == 0 else 0.0
        return Comparison(diff, diff, diff, None, p)
    result = stats.ttest_ind(x, y, equal_var=False)
    ci = result.confidence_interval(LEVEL)
    return Comparison(
        diff, float(ci.low), float(ci.high), float(result.statistic), float(result.pvalue)
    )


def prediction_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % interval for one more value of the same setting: mean ± t * s * sqrt(1 + 1/n)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    half = stats.t.ppf(0.5 + LEVEL / 2, len(x) - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / len(x))
    return float(x.mean() - half), float(x.mean() + half)


def accuracy_interval(correct: int, n: int) -> tuple[float, float]:
    """Wilson's 95 % interval of `correct` right out of `n`."""
    from scipy import stats

    ci = stats.binomtest(int(correct), int(n)).proportion_ci(LEVEL, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class McNemar:
    """Two models on the same images: `only_a` images only a gets right, `only_b` only b; the
    exact two-sided p-value of "they are equally accurate"."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    from scipy import stats

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError("McNemar's test needs both models' results on the same images")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    return McNemar(only_a, only_b, float(p))
