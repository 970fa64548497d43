"""alexnet.training.curves: the smoothed training error, and the step it first reaches a threshold."""

from alexnet.training.curves import smooth_window, smoothed, steps_to


def test_smoothing_is_the_mean_of_each_window():
    assert smoothed([1.0, 3.0, 5.0, 7.0], 2) == [2.0, 4.0, 6.0]
    assert smoothed([1.0, 3.0, 5.0, 7.0], 4) == [4.0]
    assert smoothed([1.0, 3.0], 3) == []  # shorter than one window


def test_steps_to_threshold_uses_the_smoothed_curve():
    trace = [0.9, 0.5, 0.1, 0.5, 0.3, 0.2, 0.2]
    # window 2: means 0.7, 0.3, 0.3, 0.4, 0.25, 0.2 at steps 2..7
    assert steps_to(trace, 0.3, 2) == 3  # one lucky step (0.1) alone does not count
    assert steps_to(trace, 0.25, 2) == 6
    assert steps_to(trace, 0.1, 2) is None


def test_the_window_is_a_tenth_of_an_epoch_and_at_least_five_steps():
    assert [smooth_window(n) for n in (10, 50, 390, 10_009)] == [5, 5, 39, 1000]
