"""Verdicts on size, Holm's correction and the power calculation, against numbers worked by hand."""

import math

import pytest

from alexnet.reproduce import stats


def test_p_value_and_interval_of_a_paired_t_test():
    """Differences 1, 2, 2: mean 5/3, sd 1/sqrt(3), t = 5 on 2 degrees of freedom. With 2 df the t
    distribution has a closed form, F(t) = 1/2 + t / (2 sqrt(t^2 + 2)), so p = 1 - 5/sqrt(27) and
    t(0.975, 2) = 0.95 / sqrt(2 * 0.975 * 0.025)."""
    p = stats.paired([1.0, 2.0, 3.0], [2.0, 4.0, 5.0])
    assert stats.p_value(p) == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-6)
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * (1 / math.sqrt(3)) / math.sqrt(3)
    low, high = stats.interval(p, 0.95)
    assert (low, high) == (pytest.approx(5 / 3 - half, rel=1e-6), pytest.approx(5 / 3 + half, rel=1e-6))
    assert math.isnan(stats.p_value(stats.paired([1.0], [2.0])))


def test_holm_multiplies_the_ordered_p_values_and_keeps_them_monotone():
    # 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 to stay monotone
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert stats.holm([0.8, 0.9]) == pytest.approx([1.0, 1.0])  # 0.8 * 2 capped at 1; 0.9 raised to it
    assert stats.holm_levels([0.01, 0.04], 0.05) == pytest.approx([0.975, 0.95])


def test_seeds_for_power_by_hand():
    """sd 0.5, difference 2, level 0.05, power 0.8. n = 2 (1 df, t quantiles tan(pi (p - 1/2))):
    ((12.706 + 1.376) * 0.25)^2 = 12.4 > 2. n = 3 (2 df): ((4.303 + 1.061) * 0.25)^2 = 1.80 <= 3."""
    assert stats.seeds_for_power(0.5, 2.0, 0.05, 0.8) == 3
    assert stats.seeds_for_power(0.0, 2.0) == 2
    assert stats.seeds_for_power(10.0, 0.1, max_seeds=6) == 6  # none up to the cap suffices
    with pytest.raises(ValueError):
        stats.seeds_for_power(1.0, 0.0)


@pytest.mark.parametrize("low,high,expect,paper,margin,verdict", [
    (0.5, 3.0, +1, 2.0, None, stats.AGREES),          # an effect, and it holds the paper's number
    (-1.3, 2.3, +1, 2.0, 0.5, stats.INCONCLUSIVE),    # holds the paper's number and zero: decides nothing
    (0.5, 1.5, +1, 2.0, None, stats.SMALLER),         # real, but below it
    (2.5, 4.0, +1, 2.0, None, stats.LARGER),
    (-0.3, 0.4, +1, 2.0, 0.5, stats.NO_EFFECT),       # inside the margin fixed in advance
    (-0.3, 0.6, +1, 2.0, 0.5, stats.INCONCLUSIVE),
    (-2.0, -0.5, +1, 2.0, None, stats.OPPOSITE),
    (0.1, 0.9, +1, None, None, stats.AGREES),         # no number: the side is the claim
    (-2.0, -1.0, -1, -1.4, None, stats.AGREES),
    (-1.0, -0.2, -1, -1.4, None, stats.SMALLER),
    (-3.0, -2.0, -1, -1.4, None, stats.LARGER),
    (float("nan"), float("nan"), +1, 2.0, 0.5, stats.INCONCLUSIVE),
])
def test_verdicts_judge_size_as_well_as_direction(low, high, expect, paper, margin, verdict):
    assert stats.size_verdict(low, high, expect, paper, margin) == verdict


def test_the_t_distribution_far_into_its_tails():
    """With 2 df, P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2)): about 5.6e-8 at t = 3000."""
    for t in (0.7, 5.0, 40.0, 3000.0):
        assert 1 - stats.t_cdf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), rel=1e-6)
        assert stats.t_cdf(-t, 2) == pytest.approx(1 - stats.t_cdf(t, 2), rel=1e-9)
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
