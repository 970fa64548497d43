"""Small-sample statistics for paired experiments: mean, spread, a Student-t interval, a verdict.

An experiment compares two arms run with the same seeds; the unit of analysis is the
per-seed difference. With n seeds the 95% interval of its mean is
mean +- t(0.975, n-1) * sd / sqrt(n), sd the sample standard deviation (n-1 in the
denominator). The t quantile is computed here (no SciPy needed at run time).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# Verdicts: the interval excludes zero on the side the paper predicts, on the other side, or spans it.
AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _t_pdf(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom: Simpson's rule on [0, |x|]."""
    a = abs(x)
    steps = 4000  # even; the density is smooth, so the error is far below what an interval needs
    h = a / steps
    total = _t_pdf(0.0, df) + _t_pdf(a, df)
    total += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, steps))
    half = total * h / 3
    return 0.5 + half if x >= 0 else 0.5 - half


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t, by bisection on ``t_cdf``."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Paired:
    """Arm B minus arm A, seed by seed."""

    n: int
    mean_a: float
    sd_a: float
    mean_b: float
    sd_b: float
    diffs: list[float]
    mean_diff: float
    sd_diff: float
    ci_low: float  # the 95% interval of the mean difference; nan with one seed
    ci_high: float

    def verdict(self, expected_sign: int) -> str:
        """``expected_sign`` +1: the paper predicts B above A; -1: below."""
        if math.isnan(self.ci_low):
            return INCONCLUSIVE
        if self.ci_low > 0 or self.ci_high < 0:
            return AGREES if (self.ci_low > 0) == (expected_sign > 0) else DISAGREES
        return INCONCLUSIVE

    def as_dict(self) -> dict:
        return asdict(self)


def paired(a: list[float], b: list[float], confidence: float = 0.95) -> Paired:
    """Compare two arms measured on the same seeds (``a[i]`` and ``b[i]`` share seed i)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need equal, non-zero lengths, got {len(a)} and {len(b)}")
    diffs = [y - x for x, y in zip(a, b)]
    mean_a, sd_a = mean_sd(a)
    mean_b, sd_b = mean_sd(b)
    mean_d, sd_d = mean_sd(diffs)
    n = len(diffs)
    if n < 2:
        low = high = math.nan
    else:
        half = t_quantile(0.5 + confidence / 2, n - 1) * sd_d / math.sqrt(n)
        low, high = mean_d - half, mean_d + half
    return Paired(n, mean_a, sd_a, mean_b, sd_b, diffs, mean_d, sd_d, low, high)
