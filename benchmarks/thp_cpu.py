"""Transparent huge pages for PyTorch's large CPU tensors (THP_MEM_ALLOC_ENABLE, which the
`alexnet` command sets to 1 unless told otherwise), measured end to end on the main job's
training: the same short run with the switch off and on, in alternating rounds.

    python benchmarks/thp_cpu.py [--rounds 3] [--images 12800]

Each run is a fresh process (PyTorch reads the switch once, at its first allocation):
`alexnet train` of the paper network at the main job's 67-px crops, bf16 where the CPU has
it, on the first `--images` of Fashion-MNIST's training images, one epoch. The figures are the
epoch's images per second (from metrics.jsonl) and the whole process's seconds; the ratio is
on / off per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alexnet.training.rundir import RunDir


def run(thp: str, images: int, out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "alexnet", "train", "--data", "fashion-mnist", "--variant", "paper", "--resize", "76",
           "--crop", "67", "--epochs", "1", "--init", "kaiming", "--schedule", "cosine", "--limit-train", str(images),
           "--limit-val", "1000", "--mean-samples", "1000", "--out", str(out), "--overwrite", "--log-every", "1e9"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, "THP_MEM_ALLOC_ENABLE": thp}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    record = RunDir(out).read_metrics(required=True)[-1]
    return record["images_per_sec"], wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=12800)
    a = p.parse_args()
    rates: dict[str, list[float]] = {"0": [], "1": []}
    walls: dict[str, list[float]] = {"0": [], "1": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for thp in (("0", "1") if r % 2 == 0 else ("1", "0")):
                rate, wall = run(thp, a.images, Path(tmp) / thp)
                rates[thp].append(round(rate, 1))
                walls[thp].append(round(wall, 2))
                print(f"round {r + 1}: THP_MEM_ALLOC_ENABLE={thp}: {rate:.0f} img/s, {wall:.1f} s", flush=True)
    ratios = [on / off for on, off in zip(rates["1"], rates["0"])]
    print(json.dumps({"rates": rates, "walls": walls, "ratio_median": round(statistics.median(ratios), 3),
                      "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}))


if __name__ == "__main__":
    main()
