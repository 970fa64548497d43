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


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return f


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom: the tail beyond |x| is
    I_{df/(df+x^2)}(df/2, 1/2) / 2, accurate far into the tails."""
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + x * x))
    return 1 - tail if x >= 0 else tail


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


# ---------------------------------------------------------------------------
# Verdicts on size, multiplicity and the number of seeds.

SMALLER, LARGER, OPPOSITE, NO_EFFECT = "smaller than the paper", "larger than the paper", "opposite to the paper", \
    "no effect"


def interval(p: Paired, confidence: float) -> tuple[float, float]:
    """The ``confidence`` Student-t interval of the mean paired difference (nan with one seed)."""
    if p.n < 2:
        return math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2, p.n - 1) * p.sd_diff / math.sqrt(p.n)
    return p.mean_diff - half, p.mean_diff + half


def p_value(p: Paired) -> float:
    """Two-sided p-value of the paired t-test of 'no difference' (nan with one seed)."""
    if p.n < 2:
        return math.nan
    if p.sd_diff == 0:
        return 1.0 if p.mean_diff == 0 else 0.0
    t = p.mean_diff / (p.sd_diff / math.sqrt(p.n))
    return max(0.0, min(1.0, 2 * (1 - t_cdf(abs(t), p.n - 1))))


def size_verdict(low: float, high: float, expect: int, paper: float | None = None,
                 margin: float | None = None) -> str:
    """What an interval [low, high] of (change - base) says of a claim that predicts a
    difference of sign ``expect`` and, where the paper gives one, of size ``paper``:
    ``agrees`` (it excludes zero on the predicted side and holds the paper's number, or the
    paper gives none), ``smaller``/``larger than the paper`` (it excludes zero on the predicted
    side and lies below/above the paper's number), ``no effect`` (it lies inside +-``margin``,
    fixed in advance), ``opposite to the paper`` (it excludes zero on the other side), else
    ``inconclusive``: an interval that holds both zero and the paper's number decides nothing."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if margin is not None and -margin <= low and high <= margin:
        return NO_EFFECT
    if low > 0 if expect > 0 else high < 0:  # an effect on the predicted side
        if paper is None or low <= paper <= high:
            return AGREES
        return SMALLER if abs(high if expect > 0 else low) < abs(paper) else LARGER
    if (high < 0) if expect > 0 else (low > 0):
        return OPPOSITE
    return INCONCLUSIVE


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i + 1), made
    monotone and capped at 1; a hypothesis is rejected at level a when its adjusted p <= a."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: list[float], alpha: float = 0.05) -> list[float]:
    """Each hypothesis's confidence level under Holm's procedure: 1 - alpha / (m - rank), rank
    0 for the smallest p-value; intervals at these levels carry the family's error rate."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [0.0] * m
    for rank, i in enumerate(order):
        levels[i] = 1 - alpha / (m - rank)
    return levels


def seeds_for_power(sd_diff: float, delta: float, alpha: float = 0.05, power: float = 0.8,
                    max_seeds: int = 50) -> int:
    """Seeds a paired comparison needs to detect a true difference ``delta`` with ``power``
    in a two-sided test at level ``alpha``, given the sd of paired differences from a pilot:
    the smallest n >= 2 with n >= ((t(1 - alpha/2, n-1) + t(power, n-1)) * sd / delta)^2
    (the t approximation of the power of a t-test); ``max_seeds`` when none up to it does."""
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    for n in range(2, max_seeds + 1):
        need = ((t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd_diff / delta) ** 2
        if n >= need:
            return n
    return max_seeds
