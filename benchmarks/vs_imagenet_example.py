"""One training epoch, whole process, against PyTorch's own ImageNet example.

    python benchmarks/vs_imagenet_example.py DIR [--rounds 3] [-b 128] [-j 2] [--out /tmp/vs-example]

DIR is a class-folder tree with train/ and val/ (`python benchmarks/make_images.py DIR
--classes 10 --per-class 100 --val-per-class 10` writes ImageNet-sized JPEGs). Each arm is a
fresh process, timed from its start to its exit, so that imports, data set-up, the epoch, its
validation pass and the files written all count:

- `example`: `benchmarks/peer_imagenet_example.py`, the recipe of pytorch/examples'
  `imagenet/main.py -a alexnet` (torchvision's alexnet, fp32, ImageFolder + PIL transforms,
  DataLoader);
- `alexnet fp32`: `alexnet train --data DIR --variant torchvision --epochs 1 --precision fp32`,
  the same network, batch and worker count, each side with its own recipe otherwise
  (initialisation, learning rate, augmentation, data path);
- `alexnet auto`: the same with `--precision auto` (bf16 where the CPU has bf16 instructions,
  else fp32: then it repeats the fp32 arm).

The trainer drops an epoch's last short batch (whole batches only, as CUDA graphs need); the
example trains it. Give a number of training images that is a multiple of the batch, so that
both sides train on every image (`make_images.py DIR --classes 8 --per-class 128` at batch
128); otherwise the script says how many each side trains on, and the ratio favours `alexnet`.

The arms run in rounds, each round in a rotated order, so that a slower minute of a shared
machine falls on every arm; the table gives each arm's median seconds and the median of the
per-round ratios example / arm, with their range.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commands(data: Path, out: Path, batch: int, workers: int) -> dict[str, list[str]]:
    ours = [sys.executable, "-m", "alexnet", "train", "--data", str(data), "--variant", "torchvision", "--epochs", "1",
            "--batch-size", str(batch), "--workers", str(workers), "--overwrite", "--log-every", "1e9"]
    return {
        "example": [sys.executable, str(HERE / "peer_imagenet_example.py"), str(data), "-b", str(batch),
                    "-j", str(workers), "--out", str(out)],
        "alexnet fp32": ours + ["--precision", "fp32", "--out", str(out / "fp32")],
        "alexnet auto": ours + ["--precision", "auto", "--out", str(out / "auto")],
    }


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/vs-example"))
    a = p.parse_args()
    if not (a.data / "train").is_dir() or not (a.data / "val").is_dir():
        sys.exit(f"{a.data} needs train/ and val/ class folders (benchmarks/make_images.py writes them)")
    a.out.mkdir(parents=True, exist_ok=True)
    images = sum(1 for f in (a.data / "train").rglob("*") if f.is_file())
    trained = {"example": images, "alexnet": images - images % a.batch_size}
    if trained["alexnet"] != images:
        print(f"note: {images} training images; the example trains all of them, alexnet {trained['alexnet']} "
              f"(whole batches of {a.batch_size}): use a multiple of the batch to compare like with like", flush=True)
    arms = commands(a.data, a.out, a.batch_size, a.workers)
    names = list(arms)
    seconds = {n: [] for n in names}
    for r in range(a.rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            seconds[n].append(round(timed(arms[n]), 2))
            print(f"round {r + 1}: {n} {seconds[n][-1]} s", flush=True)
    rows = []
    for n in names:
        ratios = [e / s for e, s in zip(seconds["example"], seconds[n])]
        rows.append({"arm": n, "seconds": seconds[n], "median_s": statistics.median(seconds[n]),
                     "speedup_median": round(statistics.median(ratios), 3),
                     "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)]})
    print("| arm | median s | example / arm (median) | range over rounds |\n|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['arm']} | {row['median_s']:.1f} | {row['speedup_median']:.2f} | "
              f"{row['speedup_range'][0]:.2f}-{row['speedup_range'][1]:.2f} |")
    print(json.dumps({"when": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": platform.processor()
                      or platform.machine(), "batch": a.batch_size, "workers": a.workers, "images_trained": trained,
                      "rows": rows}))


if __name__ == "__main__":
    main()
