"""Does the packed loader's memory stay bounded as the dataset grows?

For each dataset size N this writes N small JPEGs cut from scikit-image's sample
photographs, packs them with ``alexnet prepare`` (256 px, JPEG q90), then reads one
training epoch through the loader training uses (``PackedBatches``, batch 64) and
samples, after every batch, the memory of the main process and of its loader worker
processes from /proc (Linux only):

- anonymous memory (RssAnon): what the processes themselves hold: indices, decoded
  batches, prefetch queues. This is the figure that must not grow with N.
- file-backed memory (RssFile): pages of the memory-mapped shards that are mapped in at
  the moment. It follows the data read and is the kernel's page cache, which it reclaims
  under memory pressure; it is reported so that nobody mistakes it for a leak.

Usage: python benchmarks/loader_memory.py WORKDIR --sizes 2000 20000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.data import packed
from alexnet.data.loader import PackedBatches


def write_images(root: Path, count: int, classes: int = 10, size: int = 96, seed: int = 0) -> None:
    from skimage import data

    photos = [Image.fromarray(getattr(data, n)()) for n in ("astronaut", "chelsea", "coffee")]
    rng = np.random.default_rng(seed)
    for split, n in (("train", count), ("val", classes)):
        for i in range(n):
            folder = root / split / f"class{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            photo = photos[i % len(photos)]
            left, top = rng.integers(0, photo.width - 200), rng.integers(0, photo.height - 200)
            photo.crop((left, top, left + 200, top + 200)).resize((size, size)).save(
                folder / f"{i:06d}.jpg", quality=90)


def _kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # the process has just exited
        pass
    return 0


def _family(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def memory_mib() -> dict[str, float]:
    """Anonymous and file-backed resident memory of this process and its children
    (the process reading the epoch and its loader workers)."""
    pids = _family(os.getpid())
    return {"anon": sum(_kib(p, "RssAnon") for p in pids) / 1024,
            "file": sum(_kib(p, "RssFile") for p in pids) / 1024, "processes": len(pids)}


def read_through_memory_maps() -> None:
    """For comparison: read the shards through memory maps (np.memmap) instead of positioned reads."""
    def _bytes(self, i: int) -> bytearray:
        if getattr(self, "_maps", None) is None:
            self._maps = [np.memmap(self.root / f"{n}.bin", dtype=np.uint8, mode="r") for n in self._names]
        s, j = self._shard[i], self._local[i]
        return bytearray(self._maps[s][self._offsets[s][j]:self._offsets[s][j + 1]])

    packed.PackedSplit._bytes = _bytes


def one_epoch(dst: Path, workers: int, batch: int) -> dict:
    batches = PackedBatches(packed.PackedSplit(dst, "train"), workers, batch_size=batch, shuffle=True,
                            drop_last=True, device=torch.device("cpu"), seed=0)
    peak = {"anon": 0.0, "file": 0.0}
    first, images, start = None, 0, time.perf_counter()
    for b in batches:
        images += b.labels.numel()
        now = memory_mib()
        first = first or now
        peak = {k: max(peak[k], now[k]) for k in peak}
    return {"images": images, "seconds": time.perf_counter() - start, "processes": first["processes"],
            "anon_after_first_batch_mib": first["anon"], "peak_anon_mib": peak["anon"],
            "peak_file_mib": peak["file"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mmap", action="store_true", help="read through memory maps, for comparison")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one epoch over WORKDIR, as JSON
    args = p.parse_args()
    if args.mmap:
        read_through_memory_maps()
    if args.measure:
        print(json.dumps(one_epoch(Path(args.workdir), args.workers, args.batch)))
        return
    work = Path(args.workdir)
    results = []
    for n in args.sizes:
        src, dst = work / f"src-{n}", work / f"packed-{n}"
        if not packed.is_packed(dst):
            write_images(src, n)
            packed.prepare(src, dst, workers=-1, progress=False)
        size_mib = packed.read_meta(dst)["splits"]["train"]["bytes"] / 2**20
        # A fresh process per size: nothing of an earlier measurement (its loader workers) is counted.
        out = subprocess.run([sys.executable, __file__, str(dst), "--measure", "--workers", str(args.workers),
                              "--batch", str(args.batch)] + (["--mmap"] if args.mmap else []),
                             check=True, capture_output=True, text=True).stdout
        epoch = json.loads(out.splitlines()[-1])
        row = {"dataset_images": n, "dataset_mib": round(size_mib, 1), **epoch}
        results.append(row)
        print(json.dumps(row), flush=True)
    print("| images | packed size (MiB) | anon. memory after batch 1 (MiB) | peak anon. memory (MiB) "
          "| peak file-backed (MiB) |\n|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['dataset_images']:,} | {r['dataset_mib']:,.0f} | {r['anon_after_first_batch_mib']:,.0f} "
              f"| {r['peak_anon_mib']:,.0f} | {r['peak_file_mib']:,.0f} |")


if __name__ == "__main__":
    main()
