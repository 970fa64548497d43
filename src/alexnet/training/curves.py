"""Training curves: the per-step training error smoothed, and the step at which it first
reaches a threshold (how the paper's Fig. 1 compares ReLU with tanh: "reaches a 25% training
error rate six times faster")."""

from __future__ import annotations


def smoothed(trace: list[float], window: int) -> list[float]:
    """Mean of each ``window`` consecutive steps; entry i ends at step i + window (1-based)."""
    if len(trace) < window:
        return []
    total = sum(trace[:window])
    out = [total / window]
    for i in range(window, len(trace)):
        total += trace[i] - trace[i - window]
        out.append(total / window)
    return out


def steps_to(trace: list[float], threshold: float, window: int) -> int | None:
    """The first step (1-based) at which the mean training error of the last ``window`` steps
    is at or below ``threshold``; None if the run never gets there."""
    for i, e in enumerate(smoothed(trace, window)):
        if e <= threshold + 1e-9:
            return i + window
    return None


def smooth_window(steps_per_epoch: int) -> int:
    """A tenth of an epoch's steps (at least 5): long enough that one lucky batch does not
    count, short enough to place the crossing within an epoch."""
    return max(5, steps_per_epoch // 10)
