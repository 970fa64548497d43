"""A packed split decoded once and kept in memory (``--cache``): every later epoch gathers its
batches from uint8 pixels instead of reading and decoding JPEGs.

``gpu`` keeps the pixels in the training GPU's memory (batches gathered there, no copy per
step), ``host`` in pinned host memory (each batch gathered on the host and copied
asynchronously), ``auto`` the first of the two whose memory holds them with room to spare
(``SHARE`` of what is free), else none. The pixels are the packed size, uint8 RGB: N x 3 x S x
S bytes, so ImageNet's 1,281,167 training images at 256 px take 252 GB (at 4:2:0 chroma it
would be half): more than an H100 (80 GB) or an H200 (141 GB) holds, and more than a machine
with 128 GiB of memory; a subset (``--limit-train``), or a smaller packed size, fits.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import torch

from ..errors import AlexNetError
from .loader import Batch, Batches, _worker_loader
from .packed import PackedSplit

CHOICES = ("none", "auto", "gpu", "host")
SHARE = 0.5  # of the free memory a cache may take: the rest is the training's


def cache_bytes(count: int, size: int) -> int:
    return count * 3 * size * size


def free_bytes(where: str, device: torch.device) -> int:
    """Free memory of the GPU (``torch.cuda.mem_get_info``) or the host (MemAvailable)."""
    if where == "gpu":
        return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose(choice: str, count: int, size: int, device: torch.device) -> str:
    """Where a cache of ``count`` images of ``size`` px goes: 'gpu', 'host' or 'none'; a choice
    that cannot hold it is a one-line error naming the sizes."""
    if choice not in CHOICES:
        raise AlexNetError(f"--cache must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "none":
        return "none"
    need = cache_bytes(count, size)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes on this machine, each with its own copy
    if choice == "gpu" and device.type != "cuda":
        raise AlexNetError("--cache gpu keeps the images in GPU memory; this run has no GPU (--cache host or auto)")
    for where in (("gpu", "host") if choice == "auto" else (choice,)):
        if where == "gpu" and device.type != "cuda":
            continue
        room = int(SHARE * free_bytes(where, device) / (1 if where == "gpu" else local))
        # pinned host memory comes in powers of two (PyTorch's host allocator rounds up)
        held = 2 ** math.ceil(math.log2(need)) if where == "host" and device.type == "cuda" and need else need
        if held <= room:
            return where
        if choice != "auto":
            raise AlexNetError(f"--cache {where} needs {need / 1e9:.1f} GB for {count:,} images of {size} px; "
                               f"{'the GPU' if where == 'gpu' else 'the host'} has {room / 1e9:.1f} GB to spare "
                               f"({SHARE:.0%} of what is free): use --cache auto, fewer images or a smaller size")
    return "none"


def decode_all(split: PackedSplit, indices: torch.Tensor, where: str, device: torch.device, workers: int,
               batch: int = 256) -> torch.Tensor:
    """``split``'s images at ``indices``, decoded by ``workers`` processes into one uint8 tensor
    (N, 3, S, S) in GPU memory or pinned host memory."""
    out = torch.empty(len(indices), 3, split.size, split.size, dtype=torch.uint8,
                      device=device if where == "gpu" else "cpu", pin_memory=where == "host" and
                      torch.cuda.is_available())
    chunks = [c.tolist() for c in indices.split(batch)]
    if split.decode_later:
        raise AlexNetError("the cache decodes on the CPU: give it a split that does not decode later")
    loader = _worker_loader(_Owner(device), split, workers, sampler=chunks, batch_size=None)
    at = 0
    try:
        for images, _ in loader:
            out[at:at + len(images)].copy_(images, non_blocking=True)
            at += len(images)
    finally:
        from .loader import close_loader

        close_loader(loader)
    return out


class _Owner:
    """What ``_worker_loader`` reads of its owner: the device (to pin memory for a GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device


class CachedBatches(Batches):
    """Batches gathered from a decoded cache: the same batches, in the same order, as the
    ``PackedBatches`` of the same images would yield."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, **kw) -> None:
        super().__init__(len(images), **kw)
        self.images = images
        self.labels = labels.to(images.device)

    def __iter__(self) -> Iterator[Batch]:
        chunks = self._chunks()
        if self.images.device.type == "cuda" and chunks:  # the epoch's order to the GPU in one copy
            order = torch.cat(chunks).pin_memory().to(self.images.device, non_blocking=True)
            chunks = list(order.split([len(c) for c in chunks]))
        for idx in chunks:
            if self.images.device.type == self.device.type:  # on the GPU, or training on the CPU
                yield Batch(self.images[idx], self.labels[idx])
                continue
            images = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True)
            torch.index_select(self.images, 0, idx, out=images)
            yield Batch(images.to(self.device, non_blocking=True), self.labels[idx].to(self.device, non_blocking=True))
