"""Where the main job's time goes on a CPU: the training step of its network alone, in each form
the trainer offers, side by side in one process.

    python benchmarks/main_job_speed.py [--compile] [--precision fp32|bf16] [--rounds 4] [--profile]

The `paper` network at the main job's 67-px crops, batch 128, 10 classes, SGD with momentum:
forward, backward and step on synthetic data already in memory. fc6 reads the 1x1 pool5 once,
as the trainer's default has it; one more form reads it on the paper's 6x6 grid, the default
before 2026-11-27 (fc6 of 9,216 inputs instead of 256). The forms run in interleaved
rounds (each round times two steps of every form), so that a slower minute of a shared machine
falls on all of them; the figure is the median round. `--compile` adds torch.compile (its
compilation is not timed). One form swaps the package's dropout (models/dropout.py: on the CPU
a mask from uniform floats) for ATen's `nn.Dropout` (bernoulli_), the only difference between
the two forms. `--profile` instead prints where the default form's time goes (torch.profiler
over four steps after warm-up, operators by their own CPU time).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet import create_model
from alexnet.models.alexnet import pool5_size

BATCH, CROP = 128, 67


def step_of(channels_last: bool, compiled: bool, grid: int, aten_dropout: bool = False,
            dtype: torch.dtype | None = None):
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10, init="kaiming", pool5_grid=grid)
    if aten_dropout:
        for name in ("drop6", "drop7"):
            setattr(model.classifier, name, torch.nn.Dropout(model.classifier.get_submodule(name).p))
    return training_step(model, CROP, BATCH, channels_last, dtype, compiled)


def training_step(model: torch.nn.Module, size: int, batch: int, channels_last: bool, dtype: torch.dtype | None,
                  compiled: bool = False, weight_decay: float = 0.0):
    """One training step of ``model`` on a synthetic batch already in memory, as a function:
    forward under autocast (``dtype``; None: fp32), cross-entropy, backward, SGD with momentum."""
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=weight_decay)
    run = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(run(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    if args.profile:
        return profile(step_of(True, False, pool5_size("paper", CROP), dtype=dtype))
    own = pool5_size("paper", CROP)
    forms = {"eager": (False, False, own), "eager, channels-last": (True, False, own),
             "eager, channels-last, 6x6 grid": (True, False, 6),
             "eager, channels-last, ATen dropout": (True, False, own, True)}
    if args.compile:
        forms |= {"compiled": (False, True, own), "compiled, channels-last": (True, True, own)}
    steps = {name: step_of(*form, dtype=dtype) for name, form in forms.items()}
    for step in steps.values():  # warm-up (and compilation)
        step()
        step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            step()
            times[name].append((time.perf_counter() - start) / 2)
    print(f"paper network, {CROP} px, batch {BATCH}, {args.precision}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    for name, t in times.items():
        print(f"{name:32s} {BATCH / statistics.median(t):7.1f} img/s   steps: {', '.join(f'{s:.3f}' for s in t)} s")


def profile(step) -> None:
    from torch.profiler import ProfilerActivity, profile as profiler

    for _ in range(3):
        step()
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(4):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
