"""Stopping well: SIGTERM/SIGINT end a run at the next step boundary with a checkpoint, and
``--checkpoint-every`` writes checkpoints inside an epoch.

Preemptible machines, Slurm and Kubernetes stop a job with SIGTERM and a grace period
(often 30 s); a terminal sends SIGINT. The first signal asks the loop to stop after the
step in progress: the run writes a checkpoint that holds its place inside the epoch and
exits with 128 + the signal's number. A second signal stops at once, as the signal would
have without this handler.
"""

from __future__ import annotations

import signal
import threading
import time

import torch

from . import distributed
from ..errors import AlexNetError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """While entered (main thread only), the first SIGTERM or SIGINT sets ``signum``."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second signal: what it would have done without us
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\nalexnet: {signal.Signals(signum).name}: stopping after this step with a checkpoint "
              "(signal again to stop at once)", flush=True)


def parse_every(text: str) -> tuple[int, float]:
    """``--checkpoint-every``: ``"500"`` (steps), ``"10m"`` (minutes), ``"0"`` (off) -> (steps, seconds)."""
    t = text.strip().lower()
    try:
        if t.endswith("m"):
            minutes = float(t[:-1])
            if minutes > 0:
                return 0, minutes * 60
        elif int(t) >= 0:
            return int(t), 0.0
    except ValueError:
        pass
    raise AlexNetError(f"--checkpoint-every takes a number of steps (500), minutes (10m) or 0, got {text!r}")


class Cadence:
    """When to checkpoint inside an epoch and when to stop; under torchrun every rank decides
    the same, at the same step (a flag reduced over ranks every ``agree_every`` steps)."""

    def __init__(self, every: str, stop: StopRequest, world: int, device: torch.device,
                 agree_every: int = 10) -> None:
        self.steps, self.seconds = parse_every(every)
        self.stop, self.world, self.device, self.agree_every = stop, world, device, agree_every
        self.last = time.monotonic()
        self.count = 0

    def check(self) -> tuple[bool, bool]:
        """(checkpoint now, stop now), after a step."""
        self.count += 1
        due = (self.steps and self.count % self.steps == 0) or (self.seconds and time.monotonic() - self.last
                                                                   >= self.seconds)
        stop = self.stop.signum is not None
        if self.world > 1:
            if self.count % self.agree_every:
                return False, False
            flags = distributed.all_reduce_sum(torch.tensor([float(bool(due)), float(stop)], device=self.device))
            due, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        if due or stop:
            self.last = time.monotonic()
        return bool(due) or stop, stop
