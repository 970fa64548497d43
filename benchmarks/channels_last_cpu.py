"""Channels-last against NCHW for every network's training step on the CPU, side by side: what
`--channels-last auto` rests on there.

    python benchmarks/channels_last_cpu.py [--rounds 4] [--batch 128] [--precision fp32 bf16]

Each network at the input size it trains at here (`paper` and `torchvision` at their full size
and at the main job's small one, LeNet-5 and the cifar networks at theirs), built as the trainer
builds it from its defaults there (fc6 of the paper networks reading pool5 once), 10 classes, batch
128, forward, backward and an SGD step with momentum on synthetic data already in memory. The two
layouts run in interleaved rounds (two steps of each per round, after two untimed steps each), so
that a slower minute of a shared machine falls on both; the figure is the median round.
bf16 rows need a CPU with native bf16 (AVX-512 BF16 or AMX) and are skipped elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from main_job_speed import training_step  # this folder's: the same step in both

from alexnet import create_model
from alexnet.training.config import TrainConfig, apply_overrides, model_options, resolve_defaults
from alexnet.training.runtime import cpu_has_bf16

CASES = (("paper", 227), ("paper", 67), ("torchvision", 224), ("torchvision", 63), ("paper-half", 67),
         ("lenet5", 32), ("cifar-18pct", 32), ("cifar-11pct", 24))


def step_of(variant: str, size: int, batch: int, channels_last: bool, dtype: torch.dtype | None):
    torch.manual_seed(0)
    cfg = resolve_defaults(apply_overrides(TrainConfig(), {"variant": variant, "resize": size, "crop": size}))
    model = create_model(variant, 10, **model_options(cfg.model))  # as the trainer builds it at this size
    return training_step(model, size, batch, channels_last, dtype, weight_decay=5e-4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    a = p.parse_args()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, batch {a.batch}")
    print("| network | px | precision | NCHW img/s | channels-last img/s | channels-last / NCHW |\n"
          "|---|---:|---|---:|---:|---:|")
    for precision in a.precision:
        if precision == "bf16" and not cpu_has_bf16():
            print("(bf16 skipped: this CPU has no native bf16)")
            continue
        dtype = torch.bfloat16 if precision == "bf16" else None
        for variant, size in CASES:
            steps = {cl: step_of(variant, size, a.batch, cl, dtype) for cl in (False, True)}
            for step in steps.values():  # warm-up: oneDNN makes its kernels for each layout
                step()
                step()
            times = {cl: [] for cl in steps}
            for _ in range(a.rounds):
                for cl, step in steps.items():
                    start = time.perf_counter()
                    step()
                    step()
                    times[cl].append((time.perf_counter() - start) / 2)
            rate = {cl: a.batch / statistics.median(t) for cl, t in times.items()}
            print(f"| {variant} | {size} | {precision} | {rate[False]:,.1f} | {rate[True]:,.1f} | "
                  f"{rate[True] / rate[False]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
