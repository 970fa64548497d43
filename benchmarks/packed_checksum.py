"""What does checking every packed image's CRC-32 cost the loader?

Packs an ImageNet-shaped folder (``make_images.py``: 500x375 JPEGs from real photographs) at
256 px, JPEG q90 (``alexnet prepare``'s defaults), then reads and decodes every training
image in batches of 64 on one core, as a loader worker does, with the checksum check and
without it (the index's CRC-32s set aside), alternating, and reports the median of the
repeats. Also times ``alexnet prepare --verify`` over the shards.

Usage: python benchmarks/packed_checksum.py WORKDIR --images 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from alexnet.data import packed


def read_all(split: packed.PackedSplit, checked: bool) -> float:
    """Seconds to read and decode every image, in batches of 64."""
    crcs = split._crcs
    split._crcs = crcs if checked else [None] * len(crcs)
    start = time.perf_counter()
    for i in range(0, len(split), 64):
        split.batch(list(range(i, min(i + 64, len(split)))))
    split._crcs = crcs
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    work = Path(args.workdir)
    src, dst = work / "src", work / "packed"
    if not src.is_dir():
        subprocess.run([sys.executable, str(Path(__file__).with_name("make_images.py")), str(src), "--classes", "10",
                        "--per-class", str(args.images // 10), "--val-per-class", "1"], check=True)
    packed.prepare(src, dst, workers=-1, progress=False)
    torch.set_num_threads(1)
    split = packed.PackedSplit(dst, "train")
    read_all(split, True)  # warm the page cache
    times = {True: [], False: []}
    for _ in range(args.repeats):
        for checked in (False, True):
            times[checked].append(read_all(split, checked))
    per = {k: statistics.median(v) / len(split) * 1e6 for k, v in times.items()}
    nbytes = sum(int(o[-1]) for o in split._offsets)
    print(f"{len(split)} images, {nbytes / len(split) / 1024:.1f} KiB each on average")
    print(f"read + decode, unchecked: {per[False]:.0f} us/image ({1e6 / per[False]:.0f} img/s)")
    print(f"read + decode, checked:   {per[True]:.0f} us/image ({1e6 / per[True]:.0f} img/s)")
    print(f"checksum cost: {per[True] - per[False]:.1f} us/image, {100 * (per[True] / per[False] - 1):.1f}%")
    start = time.perf_counter()
    report = packed.verify(dst, progress=False)
    seconds = time.perf_counter() - start
    print(f"prepare --verify: {report['bytes'] / 2**20:.0f} MiB in {seconds:.2f} s "
          f"({report['bytes'] / 2**20 / seconds:.0f} MiB/s), {len(report['damaged'])} damaged")


if __name__ == "__main__":
    main()
