"""A run planned to a time budget (``--time-budget``): as many epochs as fit, from the speed
measured on this machine before the first epoch.

The same command then fits its time on any machine: on the 2-core development CPU the main
job trains about 2.2 times faster in bf16 than in fp32 with the CPU held to AVX2, so a fixed
epoch count that fits ten minutes on one takes twenty on the other. Choosing the count before training
keeps the learning-rate schedule whole (a cosine decay ends at zero on the last epoch), which
stopping when time runs out would not.

The measurement times the loop's own training step on the first batches of the first epoch
(data, augmentation, forward, backward, update), then puts back everything those steps
changed (weights, optimiser state, random state), so a budgeted run trains exactly as one
given the planned ``--epochs``; an evaluation batch is timed on a synthetic batch.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from ..data.loader import Splits
from ..errors import AlexNetError
from . import distributed
from .config import TrainConfig
from .runtime import Runtime, timed_calls

# A whole epoch takes longer than its steps' median: now and then a step runs two or three times
# as long (the data path's processes, the allocator, a shared machine), and the checkpoint and the
# progress lines add a little. On the 2-core development CPU the main job's epochs took 1.02-1.15
# times the median in bf16 and 1.03-1.08 times in fp32 held to AVX2 (docs/benchmarks.md, 2026-11-27).
# The median, not the mean, of 20 steps: one slow step among them moved the mean by 8%.
MARGIN = 1.10
# An evaluation costs more than its forward passes timed alone: making the crops, the data, and,
# for `alexnet evaluate` after a run, starting the command. The main job's test evaluation (10
# crops of 10,000 images, the whole command) took 1.52 times the forward passes' time in bf16 on
# the 2-core development CPU and 1.46 times in fp32 with that CPU held to AVX2 (2026-11-27).
EVAL_MARGIN = 1.5
# The first steps allocate and pick kernels (and compile, with --compile): on the 2-core
# development CPU the main job's first five ran 1.1-3.5 times the later ones.
WARMUP, TIMED = 5, 20


@dataclass
class Plan:
    """What the measurement found and the epochs it allows."""

    step_s: float  # one step of the loop: data, augmentation, forward, backward, update
    eval_s: float  # one evaluation batch
    epoch_s: float  # an epoch (of epoch_steps steps where set) with its validation, margin included
    epochs: int
    spent: float  # seconds from the start to the plan: set-up and the measurement
    after_s: float  # kept for the evaluations after the last epoch
    epoch_steps: int = 0  # each epoch's steps when shortened (--epoch-steps); 0: whole epochs
    steps: int = 0  # a whole epoch's steps

    def describe(self, budget: float) -> str:
        after = f", {self.after_s:.0f} s kept for the evaluations after it" if self.after_s else ""
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        if self.epoch_steps:
            epochs += (f" of {self.epoch_steps} of the {self.steps} steps each (a fresh random "
                       f"{100 * self.epoch_steps / self.steps:.0f}% of the training images an epoch: more steps "
                       f"than {self.epochs - 1} whole)")
        return (f"time budget {budget:g} s: a training step takes {self.step_s:.3f} s here, an epoch with its "
                f"validation about {self.epoch_s:.0f} s, set-up took {self.spent:.0f} s{after}: {epochs}")


def plan(budget: float, spent: float, epoch_s: float, after_s: float, max_epochs: int) -> int:
    """How many whole epochs fit the ``budget`` seconds after ``spent``, leaving ``after_s``
    for the evaluations after the last one; at most ``max_epochs``. Zero when not even one fits."""
    room = budget - spent - after_s
    return max(0, min(max_epochs, math.floor(room / epoch_s)))


def shortened(room: float, epochs: int, max_epochs: int, steps: int, step_s: float, val_s: float) -> tuple[int, int]:
    """(epochs, steps an epoch; 0: all) when ``epochs`` whole epochs of ``steps`` steps fit
    ``room`` seconds and one more does not: one more epoch of fewer steps, where that trains more
    steps in the same time (validation, ``val_s`` an epoch, is paid once more), so that the last
    whole epoch's worth of unused time is not lost. The learning-rate schedule then runs whole
    over the shorter epochs."""
    if epochs == 0 or epochs >= max_epochs:
        return epochs, 0
    more = epochs + 1
    cap = math.floor((room / (MARGIN * more) - val_s) / step_s)
    if cap >= steps or cap < 1 or more * cap <= epochs * steps:  # nothing gained (or whole ones fit after all)
        return epochs, 0
    return more, cap


def timed(fn: Callable[[], None], rt: Runtime) -> float:
    """Median seconds of ``fn`` over TIMED calls, after WARMUP untimed ones."""
    return statistics.median(seconds for seconds, _ in timed_calls(fn, rt.devices, TIMED, WARMUP))


@contextmanager
def rewound(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
            device: torch.device) -> Iterator[None]:
    """Whatever training steps run inside, undone afterwards: the weights, the optimiser's
    state (momentum, learning rates), the loss scale, the gradients and the random state (the
    CPU's, and ``device``'s when it is a GPU). The optimiser's state comes back as new objects:
    a CUDA graph captured inside holds the old ones and must be captured again."""
    weights = copy.deepcopy(model.state_dict())
    state, scale = copy.deepcopy(optimizer.state_dict()), copy.deepcopy(scaler.state_dict())
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(weights)  # copied into the same tensors: wrappers and graphs still see them
        optimizer.load_state_dict(state)
        scaler.load_state_dict(scale)
        optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def eval_seconds(model: nn.Module, rt: Runtime, crop: int, batch: int) -> float:
    """Seconds of one evaluation batch of ``model``, on a synthetic batch of the run's shape."""
    x = rt.prepare(torch.randn(batch, 3, crop, crop, device=rt.device))
    was_training = model.training
    model.eval()

    def forward():
        with torch.no_grad(), rt.autocast():
            model(x)

    try:
        return timed(forward, rt)
    finally:
        model.train(was_training)


def slowest(seconds: tuple[float, ...], device: torch.device) -> tuple[float, ...]:
    """Each of ``seconds``, the largest over the processes (all plan by the slowest)."""
    t = torch.tensor(seconds, dtype=torch.float64, device=device)
    return tuple(distributed.all_reduce_max(t).tolist())


def fit_to_budget(step: Callable[[], None], learner, splits: Splits, cfg: TrainConfig, started: float) -> Plan:
    """Measure, then plan: ``step`` (the loop's own training step on its next batch, with the
    ``learner``'s model, optimiser and scaler) timed and undone, an evaluation batch timed, and
    the epochs that fit ``cfg.optim.time_budget`` seconds counted from ``started`` (a
    ``time.perf_counter()`` reading: the command's start, or ``fit``'s call), at most ``cfg.optim.epochs``,
    leaving time for the evaluations after the last epoch: the final 10-crop validation where
    ``--ten-crop`` asks for one, and ``--budget-eval-views`` more. An error when not even one
    epoch fits."""
    rt, train, val = learner.rt, splits.train, splits.val
    with rewound(learner.model, learner.optimizer, learner.scaler, rt.device):
        step_s = timed(step, rt)
    eval_batch = (val if val is not None else train).local_batch
    eval_s = eval_seconds(learner.model, rt, cfg.data.crop, eval_batch)
    # every process plans from the same figures, so all train the same epochs
    step_s, eval_s, spent = slowest((step_s, eval_s, time.perf_counter() - started), rt.device)
    val_batches = len(val) if val is not None else 0
    epoch_s = MARGIN * (len(train) * step_s + val_batches * eval_s)
    views = cfg.optim.budget_eval_views / rt.env.world + (10 * val_batches * eval_batch if cfg.ten_crop else 0)
    after_s = EVAL_MARGIN * views / eval_batch * eval_s
    budget = cfg.optim.time_budget
    epochs = plan(budget, spent, epoch_s, after_s, cfg.optim.epochs)
    if epochs == 0:
        raise AlexNetError(f"--time-budget {budget:g} does not fit one epoch here: an epoch with its validation "
                           f"takes about {epoch_s:.0f} s, set-up took {spent:.0f} s and the evaluations after it "
                           f"need about {after_s:.0f} s; raise the budget or train on fewer images (--limit-train)")
    epochs, epoch_steps = shortened(budget - spent - after_s, epochs, cfg.optim.epochs, len(train), step_s,
                                    val_batches * eval_s)
    if epoch_steps:
        epoch_s = MARGIN * (epoch_steps * step_s + val_batches * eval_s)
    return Plan(step_s, eval_s, epoch_s, epochs, spent, after_s, epoch_steps, len(train))
