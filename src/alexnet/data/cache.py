"""A packed split decoded once and kept in memory (``--cache``): every later epoch gathers its
batches from uint8 pixels instead of reading and decoding JPEGs.

``gpu`` keeps the pixels in the training GPU's memory (batches gathered there, no copy per
step), ``host`` in pinned host memory (each batch gathered on the host and copied
asynchronously), ``auto`` the first of the two whose memory holds them with room to spare
(``SHARE`` of what is free), else none.

Two forms (``--cache-format``). ``rgb``: the packed size, uint8 RGB, N x 3 x S x S bytes.
``420``: JPEG's own YCbCr with the two colour planes at half resolution (4:2:0), 1.5 x S x S
bytes an image, turned back into RGB on the training device (from the host, only the compact
form crosses to the GPU): where the augmentation runs fused, by its kernel as it crops each
training batch (``CachedBatches(planes=True)``), elsewhere as each batch is gathered. The
packed JPEGs are already 4:2:0, so the second subsampling loses little: a pixel differs from
the RGB form by a few levels, at colour edges. ``auto`` takes rgb where it fits and 420 where
only that fits.

ImageNet's 1,281,167 training images at 256 px take 252 GB as rgb and 126 GB as 420: neither
fits an H100 (80 GB) or half of an H200's 141 GB, nor half of a machine's 128 GiB; at 224 px,
96 GB as 420. A subset (``--limit-train``) or a smaller packed size fits.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import torch

from ..errors import AlexNetError
from .loader import Batch, Batches, worker_loader
from .packed import PackedSplit
from .ycc import Planes420, from_420, to_420

CHOICES = ("none", "auto", "gpu", "host")
FORMATS = ("auto", "rgb", "420")
SHARE = 0.5  # of the free memory a cache may take: the rest is the training's


def plane_shapes(count: int, size: int, form: str = "rgb") -> list[tuple[int, ...]]:
    """The uint8 tensors a cache of ``form`` holds: RGB (N, 3, S, S), or 4:2:0's Y (N, S, S) and
    Cb, Cr (N, 2, ceil(S/2), ceil(S/2))."""
    half = (size + 1) // 2
    return [(count, 3, size, size)] if form == "rgb" else [(count, size, size), (count, 2, half, half)]


def cache_bytes(count: int, size: int, form: str = "rgb") -> int:
    return sum(math.prod(shape) for shape in plane_shapes(count, size, form))


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


def choose(choice: str, count: int, size: int, device: torch.device, form: str = "rgb") -> tuple[str, str]:
    """Where a cache of ``count`` images of ``size`` px goes ('gpu', 'host' or 'none') and in which
    form ('rgb' or '420'); a choice that cannot hold it is a one-line error naming the sizes."""
    if choice not in CHOICES:
        raise AlexNetError(f"--cache must be one of {', '.join(CHOICES)}, got {choice!r}")
    if form not in FORMATS:
        raise AlexNetError(f"--cache-format must be one of {', '.join(FORMATS)}, got {form!r}")
    if choice == "none":
        return "none", form
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes on this machine, each with its own copy
    if choice == "gpu" and device.type != "cuda":
        raise AlexNetError("--cache gpu keeps the images in GPU memory; this run has no GPU (--cache host or auto)")
    forms = ("rgb", "420") if form == "auto" else (form,)
    for where in (("gpu", "host") if choice == "auto" else (choice,)):
        if where == "gpu" and device.type != "cuda":
            continue
        room = int(SHARE * free_bytes(where, device) / (1 if where == "gpu" else local))
        for f in forms:
            if _held(count, size, f, where, device) <= room:
                return where, f
        if choice != "auto":
            need = cache_bytes(count, size, forms[-1])
            raise AlexNetError(f"--cache {where} needs {need / 1e9:.1f} GB for {count:,} images of {size} px "
                               f"({forms[-1]}); {'the GPU' if where == 'gpu' else 'the host'} has {room / 1e9:.1f} GB "
                               f"to spare ({SHARE:.0%} of what is free): use --cache auto, "
                               f"{'' if forms[-1] == '420' else '--cache-format 420, '}fewer images or a smaller size")
    return "none", form


def _held(count: int, size: int, form: str, where: str, device: torch.device) -> int:
    """Bytes a cache takes: pinned host memory comes in powers of two (PyTorch's host allocator
    rounds each allocation up), one allocation per plane (``Pixels``)."""
    planes = [math.prod(shape) for shape in plane_shapes(count, size, form)]
    if where == "host" and device.type == "cuda":
        return sum(2 ** math.ceil(math.log2(b)) for b in planes if b)
    return sum(planes)


class Pixels:
    """The cache's pixels, in memory: uint8 RGB (one plane set of (N, 3, S, S)), or 4:2:0
    (Y (N, S, S) and Cb, Cr (N, 2, S/2, S/2))."""

    def __init__(self, count: int, size: int, form: str, where: str, device: torch.device) -> None:
        pin = where == "host" and torch.cuda.is_available()
        self.form = form
        self.planes = [torch.empty(sh, dtype=torch.uint8, device=device if where == "gpu" else "cpu", pin_memory=pin)
                       for sh in plane_shapes(count, size, form)]

    def __len__(self) -> int:
        return len(self.planes[0])

    @property
    def device(self) -> torch.device:
        return self.planes[0].device

    def put(self, at: int, images: torch.Tensor) -> None:
        """Store uint8 RGB ``images`` at positions ``at``, ``at + 1``, ..."""
        for plane, part in zip(self.planes, (images,) if self.form == "rgb" else to_420(images)):
            plane[at:at + len(part)].copy_(part, non_blocking=True)

    def gather(self, idx: torch.Tensor, device: torch.device, planes: bool = False) -> torch.Tensor | Planes420:
        """The images at ``idx`` as uint8 RGB (B, 3, S, S) on ``device``, or, where ``planes`` and the
        form is 4:2:0, as its planes (for the fused augmentation, which converts as it crops). From
        host memory to a GPU only the cached form crosses (half the bytes at 4:2:0)."""
        if self.device.type == device.type:  # on the GPU, or training on the CPU
            parts = [plane[idx] for plane in self.planes]
        else:
            parts = []
            for plane in self.planes:
                part = torch.empty((len(idx), *plane.shape[1:]), dtype=torch.uint8, pin_memory=True)
                torch.index_select(plane, 0, idx, out=part)
                parts.append(part.to(device, non_blocking=True))
        if self.form == "rgb":
            return parts[0]
        return Planes420(*parts) if planes else from_420(*parts)


def decode_all(split: PackedSplit, indices: torch.Tensor, where: str, device: torch.device, workers: int,
               form: str = "rgb", batch: int = 256) -> Pixels:
    """``split``'s images at ``indices``, decoded by ``workers`` processes into GPU memory or
    pinned host memory, in ``form`` ('rgb' or '420')."""
    out = Pixels(len(indices), split.size, form, where, device)
    chunks = [c.tolist() for c in indices.split(batch)]
    if split.decode_later:
        raise AlexNetError("the cache decodes on the CPU: give it a split that does not decode later")
    loader = worker_loader(_Owner(device), split, workers, sampler=chunks, batch_size=None)
    at = 0
    try:
        for images, _ in loader:
            out.put(at, images.to(out.device, non_blocking=True))
            at += len(images)
    finally:
        from .loader import close_loader

        close_loader(loader)
    return out


class _Owner:
    """What ``worker_loader`` reads of its owner: the device (to pin memory for a GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device


class CachedBatches(Batches):
    """Batches gathered from a decoded cache: the same batches, in the same order, as the
    ``PackedBatches`` of the same images would yield (the same pixels in the rgb form). With
    ``planes``, a 4:2:0 cache's batches stay ``Planes420`` for the fused augmentation to convert."""

    def __init__(self, pixels: Pixels, labels: torch.Tensor, planes: bool = False, **kw) -> None:
        super().__init__(len(pixels), **kw)
        self.pixels, self.planes = pixels, planes
        self.labels = labels.to(pixels.device)

    def __iter__(self) -> Iterator[Batch]:
        chunks = self._chunks()
        if self.pixels.device.type == "cuda" and chunks:  # the epoch's order to the GPU in one copy
            order = torch.cat(chunks).pin_memory().to(self.pixels.device, non_blocking=True)
            chunks = list(order.split([len(c) for c in chunks]))
        for idx in chunks:
            yield Batch(self.pixels.gather(idx, self.device, self.planes),
                        self.labels[idx].to(self.device, non_blocking=True))
