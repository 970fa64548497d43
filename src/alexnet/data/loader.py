"""Batches of preprocessed uint8 images, delivered on the training device.

Every source (the in-memory Fashion-MNIST tensors, a class-per-folder tree)
yields the same thing: a ``Batch`` of uint8 images (B, C, S, S) at the
preprocessed size S on the device, their labels, and the paths of files that
could not be read. Crops, flips, colour noise and normalisation happen after
that, batched on the device (``transforms.py``).

Order is a function of (seed, epoch) alone, so a resumed run sees the same
batches as an uninterrupted one; with several processes each rank reads only
its own shard of that order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import AlexNetError
from . import fashion_mnist
from .folder import ImageFolder
from .transforms import to_rgb
from .packed import PackedSplit, is_packed, read_meta


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, C, S, S) on the device
    labels: torch.Tensor  # int64 (B,)
    skipped: list[str] = field(default_factory=list)  # unreadable files dropped from this batch


# Batches each loader worker keeps ready. A benchmark of the loader must warm up past
# workers x PREFETCH batches, or it times batches that were decoded during the warm-up.
PREFETCH = 4

def epoch_order(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's indices for an epoch: a (seed, epoch)-determined permutation,
    cut to a multiple of ``world`` and dealt out round-robin."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if world > 1:
        order = order[: n - n % world] if shuffle else order
        order = order[rank::world]
    return order


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of a uint8 batch of square images."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < x.shape[-1])
    return y.round_().clamp_(0, 255).to(torch.uint8)


class Batches:
    """Base: an iterable of ``Batch`` with ``set_epoch``, ``len`` and a dataset size."""

    def __init__(self, num_images: int, batch_size: int, shuffle: bool, drop_last: bool, device: torch.device,
                 seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise AlexNetError(f"--batch-size {batch_size} is not divisible by the {world} processes")
        self.num_images, self.shuffle, self.drop_last = num_images, shuffle, drop_last
        self.local_batch = batch_size // world
        self.device, self.seed, self.rank, self.world = device, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        return epoch_order(self.num_images, self.shuffle, self.seed, self.epoch, self.rank, self.world)

    def _chunks(self) -> list[torch.Tensor]:
        order = self._order()
        chunks = list(order.split(self.local_batch))
        if self.drop_last and chunks and len(chunks[-1]) < self.local_batch:
            chunks.pop()
        return chunks

    def __len__(self) -> int:
        per_rank = len(self._order())
        full, rest = divmod(per_rank, self.local_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[Batch]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop this split's loader processes now rather than when the object is collected.
        Processes forked for a later loader while an earlier one is running inherit its
        state and fail to clean it up at exit; close the one before starting the next."""


class TensorBatches(Batches):
    """In-memory uint8 images (N, C, h, w), resized to ``size`` batch by batch on the device.

    On a GPU the whole set moves to device memory once (Fashion-MNIST's 60,000 images are
    47 MB): batches are then gathered on the device, with no host copy per step."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int, **kw) -> None:
        super().__init__(len(images), **kw)
        self.images, self.labels, self.size = images.to(self.device), labels.to(self.device), size

    def __iter__(self) -> Iterator[Batch]:
        for idx in self._chunks():
            idx = idx.to(self.device)
            yield Batch(resize_batch(self.images[idx], self.size), self.labels[idx])


def _collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    good = [(img, label) for img, label, _ in items if img is not None]
    skipped = [path for img, _, path in items if img is None]
    if not good:
        return None, torch.empty(0, dtype=torch.long), skipped
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), skipped


class _Sampler(torch.utils.data.Sampler):
    def __init__(self, owner: Batches) -> None:
        self.owner = owner

    def __iter__(self):
        for chunk in self.owner._chunks():  # one batch's Python list at a time, not the epoch's
            yield chunk.tolist()

    def __len__(self) -> int:
        return len(self.owner)


def _worker_loader(owner: Batches, dataset, workers: int, **kw) -> torch.utils.data.DataLoader:
    """A DataLoader over ``owner``'s batches of indices, decoded by ``workers`` processes
    (-1: one per CPU core, as --workers documents), kept alive across epochs, 4 batches ahead each."""
    if workers < 0:
        workers = os.cpu_count() or 1
    return torch.utils.data.DataLoader(
        dataset, num_workers=workers, pin_memory=owner.device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers > 0 else None, **kw)


def close_loader(loader: torch.utils.data.DataLoader) -> None:
    iterator = getattr(loader, "_iterator", None)  # persistent workers live in the kept iterator
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


class FolderBatches(Batches):
    """A class-per-folder split, decoded by ``workers`` processes."""

    def __init__(self, dataset: ImageFolder, workers: int, **kw) -> None:
        super().__init__(len(dataset), **kw)
        self.dataset = dataset
        self.loader = _worker_loader(self, dataset, workers, batch_sampler=_Sampler(self), collate_fn=_collate)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels, skipped in self.loader:
            if images is None:  # every file of this batch was unreadable
                yield Batch(torch.empty(0, 3, self.dataset.resize, self.dataset.resize, dtype=torch.uint8,
                                        device=self.device), labels.to(self.device), skipped)
                continue
            yield Batch(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True),
                        skipped)

    def close(self) -> None:
        close_loader(self.loader)


class PackedBatches(Batches):
    """A split of a packed dataset (``alexnet prepare``): whole batches are read from the
    shards and decoded by ``workers`` processes, or, with ``device_decode``,
    sent still encoded and decoded on the training device by torchvision's batched
    ``decode_jpeg`` (nvJPEG on CUDA: ``--gpu-decode``)."""

    def __init__(self, split: "PackedSplit", workers: int, device_decode: bool = False, **kw) -> None:
        super().__init__(len(split), **kw)
        self.dataset = split
        split.decode_later = device_decode
        # The dataset reads whole batches: each "index" the sampler yields is a batch's list.
        self.loader = _worker_loader(self, split, workers, sampler=_Sampler(self), batch_size=None)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in self.loader:
            if isinstance(images, list):  # still-encoded JPEGs: decode the batch on the device
                images = decode_on_device(images, self.device)
            yield Batch(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))

    def close(self) -> None:
        close_loader(self.loader)


def decode_on_device(encoded: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A batch of JPEGs decoded on ``device`` into one uint8 tensor (B, C, H, W).

    On CUDA, nvJPEG's hardware engine writes its output before the work already queued on
    the stream it is given has run (pytorch/vision pull request 9606), while PyTorch's
    caching allocator may hand the decoder a block that queued kernels are still reading:
    the result is silently wrong numbers elsewhere. So the caller's stream is drained first;
    the decode itself is synchronous, so this costs the overlap of one decode with the
    previous step, not a pass over the data."""
    from torchvision.io import decode_jpeg

    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return torch.stack(decode_jpeg(encoded, device=device))


@dataclass
class Splits:
    classes: list[str]
    train: Batches | None
    val: Batches
    val_name: str  # which split ``val`` is, for reporting a protocol ("val", "test")


def _limited(n: int, limit: int) -> int:
    return min(n, limit) if limit else n


def build(data: str, resize: int, batch_size: int, device: torch.device, *, workers: int = -1,
          seed: int = 0, rank: int = 0, world: int = 1, train: bool = True, limit_train: int = 0,
          limit_val: int = 0, fashion_mnist_dir: str | None = None, eval_batch_size: int | None = None,
          gpu_decode: bool = False) -> Splits:
    """The train and validation batches for ``data`` ('fashion-mnist' or a folder)."""
    common = dict(device=device, seed=seed, rank=rank, world=world)
    eval_bs = eval_batch_size or batch_size
    root = os.path.expanduser(data)
    if gpu_decode and not (is_packed(root) and read_meta(root)["encoding"] == "jpeg"):
        raise AlexNetError(f"--gpu-decode reads packed JPEG datasets (alexnet prepare); {data!r} is not one")
    if gpu_decode and device.type != "cuda":
        raise AlexNetError("--gpu-decode needs a CUDA device")
    if data == "fashion-mnist":
        val_x, val_y = fashion_mnist.load("test", fashion_mnist_dir)
        n = _limited(len(val_x), limit_val)
        val = TensorBatches(val_x[:n], val_y[:n], resize, batch_size=eval_bs, shuffle=False, drop_last=False,
                            **common)
        train_b = None
        if train:
            tr_x, tr_y = fashion_mnist.load("train", fashion_mnist_dir)
            n = _limited(len(tr_x), limit_train)
            train_b = TensorBatches(tr_x[:n], tr_y[:n], resize, batch_size=batch_size, shuffle=True,
                                    drop_last=True, **common)
        # Fashion-MNIST has no validation split: its 10,000-image test set serves.
        return Splits(list(fashion_mnist.CLASSES), train_b, val, "test")

    if is_packed(root):
        train_split = PackedSplit(root, "train")
        if train_split.size != resize:
            raise AlexNetError(f"packed dataset {root} holds {train_split.size}-px images, but --resize is {resize}")
        val_split = PackedSplit(root, "val")
        val = PackedBatches(val_split, workers, gpu_decode, batch_size=eval_bs, shuffle=False, drop_last=False,
                            **common)
        if limit_val:  # packing shuffled the images, so the first N are a random sample
            val.num_images = min(limit_val, val.num_images)
        train_b = None
        if train:
            train_b = PackedBatches(train_split, workers, gpu_decode, batch_size=batch_size, shuffle=True,
                                    drop_last=True, **common)
            if limit_train:
                train_b.num_images = min(limit_train, train_b.num_images)
        return Splits(train_split.classes, train_b, val, "val")
    if not os.path.isdir(root):
        raise AlexNetError(f"data folder {data!r} not found (expected 'fashion-mnist' or a folder with train/ and val/)")
    train_ds = ImageFolder(root, "train", resize)
    classes = train_ds.classes
    val_ds = ImageFolder(root, "val", resize, classes=classes)
    if limit_val:
        val_ds.samples = val_ds.samples[:limit_val]
    val = FolderBatches(val_ds, workers, batch_size=eval_bs, shuffle=False, drop_last=False, **common)
    train_b = None
    if train:
        if limit_train:
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(train_ds.samples), generator=g)[:limit_train].sort().values
            train_ds.samples = [train_ds.samples[i] for i in keep]
        train_b = FolderBatches(train_ds, workers, batch_size=batch_size, shuffle=True, drop_last=True, **common)
    return Splits(classes, train_b, val, "val")


def estimate_mean_image(batches: Batches, max_images: int) -> torch.Tensor:
    """The mean preprocessed training image, (3, S, S) in [0, 1], over a seeded random
    subset of at most ``max_images`` images (the paper uses the whole training set)."""
    from .. import distributed

    saved = (batches.shuffle, batches.epoch, batches.drop_last)
    batches.shuffle, batches.epoch, batches.drop_last = True, -1, False  # a fixed order of its own
    # Each process sums its shard of the same first images: the result does not depend on the world size.
    budget = -(-max_images // batches.world)
    total, count = None, 0
    try:
        for batch in batches:
            if batch.labels.numel() == 0:
                continue
            x = to_rgb(batch.images).to(torch.float64)
            s = x.sum(0)
            total = s if total is None else total + s
            count += x.shape[0]
            if count >= budget:
                break
    finally:
        batches.shuffle, batches.epoch, batches.drop_last = saved
    if total is None:
        raise AlexNetError("no readable training images to compute the mean image from")
    stats = torch.cat([total.flatten(), torch.tensor([float(count)], dtype=torch.float64, device=total.device)])
    stats = distributed.all_reduce_sum(stats)
    return (stats[:-1].view_as(total) / stats[-1] / 255).float().cpu()
