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

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..errors import AlexNetError
from ..files import printable
from . import cifar10, fashion_mnist
from .folder import ImageFolder, find_classes, resolve_workers
from .transforms import to_rgb
from .packed import PackedSplit, is_packed, read_meta, split_encoded
from .ycc import Planes420


@dataclass
class Batch:
    # uint8 (B, C, S, S) on the device; or its planes, from a 4:2:0 cache's training split where the
    # augmentation fuses (cache.CachedBatches), which the augmentation converts as it crops
    images: torch.Tensor | Planes420
    labels: torch.Tensor  # int64 (B,)
    skipped: list[str] = field(default_factory=list)  # "PATH (why)" of each file dropped from this batch


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
    """Base: an iterable of ``Batch`` with ``set_epoch``, ``len`` and a dataset size.

    ``indices`` (optional) restricts it to those images of its dataset: a training set
    without its held-out validation images, or a ``--limit`` subset."""

    def __init__(self, num_images: int, batch_size: int, shuffle: bool, drop_last: bool, device: torch.device,
                 seed: int = 0, rank: int = 0, world: int = 1, indices: torch.Tensor | None = None) -> None:
        if batch_size % world:
            raise AlexNetError(f"--batch-size {batch_size} is not divisible by the {world} processes")
        self.indices = indices
        self.num_images = num_images if indices is None else len(indices)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.local_batch = batch_size // world
        self.device, self.seed, self.rank, self.world = device, seed, rank, world
        self.epoch = 0
        self.start = 0  # the epoch's first batch: > 0 when a run resumes inside an epoch
        self.max_batches = 0  # an epoch's batches at most (--epoch-steps): the first of its order; 0: all

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next pass yields ``epoch``'s batches, from its ``start``-th on: the same batches
        an uninterrupted pass would have yielded from there."""
        self.epoch, self.start = epoch, start

    def repeat(self, times: int) -> None:
        """Each epoch passes over every image ``times`` times, shuffled together: a long epoch
        over a small set (the benchmarks' loader rows)."""
        base = torch.arange(self.num_images) if self.indices is None else self.indices
        self.indices = base.repeat(times)
        self.num_images = len(self.indices)

    def one_pass(self, shuffle: bool, epoch: int) -> Iterator[Batch]:
        """Every image once (no batch dropped), in ``epoch``'s order, leaving the training passes'
        settings and position as they were: a fixed order of the split's own (the mean image)."""
        saved = (self.shuffle, self.drop_last, self.epoch, self.start, self.max_batches)
        self.shuffle, self.drop_last, self.epoch, self.start, self.max_batches = shuffle, False, epoch, 0, 0
        try:
            yield from iter(self)
        finally:
            self.shuffle, self.drop_last, self.epoch, self.start, self.max_batches = saved

    def _order(self) -> torch.Tensor:
        order = epoch_order(self.num_images, self.shuffle, self.seed, self.epoch, self.rank, self.world)
        if self.max_batches:
            order = order[: self.max_batches * self.local_batch]
        return order if self.indices is None else self.indices[order]

    def _chunks(self) -> list[torch.Tensor]:
        order = self._order()
        chunks = list(order.split(self.local_batch))
        if self.drop_last and chunks and len(chunks[-1]) < self.local_batch:
            chunks.pop()
        return chunks[self.start:]

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
    47 MB), and so does each epoch's order, in one asynchronous copy from pinned memory:
    batches are then gathered on the device, and a step waits for no host copy."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int, **kw) -> None:
        super().__init__(len(images), **kw)
        self.images, self.labels, self.size = images.to(self.device), labels.to(self.device), size

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        if self.device.type == "cuda":
            order = order.pin_memory().to(self.device, non_blocking=True)
        chunks = order.split(self.local_batch)
        if self.drop_last and chunks and len(chunks[-1]) < self.local_batch:
            chunks = chunks[:-1]
        for idx in chunks[self.start:]:
            yield Batch(resize_batch(self.images[idx], self.size), self.labels[idx])


def collate_images(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[tuple[str, str]]]:
    """Stack the (image, label, path) items that hold an image; the others hold the reason their
    file was skipped (a str), returned as (printable path, reason) pairs."""
    good = [(img, label) for img, label, _ in items if not isinstance(img, str)]
    skipped = [(printable(path), img) for img, _, path in items if isinstance(img, str)]  # any bytes
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
        return len(self.owner) - self.owner.start


def worker_loader(owner: Batches, dataset, workers: int, **kw) -> torch.utils.data.DataLoader:
    """A DataLoader over ``owner``'s batches of indices, decoded by ``workers`` processes
    (-1: one per CPU core, as --workers documents), kept alive across epochs, 4 batches ahead each."""
    workers = resolve_workers(workers)
    # its own generator: a DataLoader draws its workers' base seed from the global random state
    # each time it starts a pass, which would move the dropout masks drawn after it by whether
    # and when a pass started (a resumed run, or a run whose time budget was measured first)
    return torch.utils.data.DataLoader(
        dataset, num_workers=workers, pin_memory=owner.device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers > 0 else None, generator=torch.Generator(), **kw)


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
        self.loader = worker_loader(self, dataset, workers, batch_sampler=_Sampler(self), collate_fn=collate_images)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels, skipped in self.loader:
            skipped = [f"{path} ({why})" for path, why in skipped]
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
    shards and decoded by ``workers`` processes, or, for a split that decodes later,
    sent still encoded and decoded on the training device by torchvision's batched
    ``decode_jpeg`` (nvJPEG on CUDA: ``--gpu-decode``), beside the training step
    (``DeviceDecoder``)."""

    def __init__(self, split: "PackedSplit", workers: int, **kw) -> None:
        super().__init__(len(split), **kw)
        device_decode = split.decode_later  # the split hands over its JPEGs still encoded
        # The dataset reads whole batches: each "index" the sampler yields is a batch's list.
        self.loader = worker_loader(self, split, workers, sampler=_Sampler(self), batch_size=None)
        self.decoder = DeviceDecoder(self.device) if device_decode else None

    def __iter__(self) -> Iterator[Batch]:
        if self.decoder is not None:
            yield from self.decoder.batches(self.loader)
            return
        for images, labels in self.loader:
            yield Batch(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))

    def close(self) -> None:
        close_loader(self.loader)
        if self.decoder is not None:
            self.decoder.close()


class DeviceDecoder:
    """Decodes each batch's JPEGs on the device in a thread of its own, one batch ahead of the
    one being trained on, so that decoding overlaps the step instead of preceding it.

    On CUDA the decoding runs on a stream of its own, and the step's stream waits for it on an
    event (not the device): nvJPEG's hardware engine can write its output before work already
    queued on the stream it is given has run (pytorch/vision pull request 9606), and PyTorch's
    caching allocator hands out memory per stream, so draining the decoder's own stream before
    each batch (which holds only the previous batch's stacking) keeps its output out of
    anything queued work still reads, while the training stream runs on. Each batch's tensors
    are recorded as used on the training stream, so the decoder cannot reuse them early."""

    def __init__(self, device: torch.device) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="alexnet-decode")

    def batches(self, loader) -> Iterator[Batch]:
        pending = None
        for encoded, labels in loader:
            job = self.pool.submit(self._decode, encoded, labels)
            if pending is not None:
                yield self._ready(pending)
            pending = job
        if pending is not None:
            yield self._ready(pending)

    def _decode(self, encoded: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor):
        from torchvision.io import decode_jpeg

        views = split_encoded(*encoded)
        if not self.cuda:
            return torch.stack(decode_jpeg(views)), labels, None
        with torch.cuda.stream(self.stream):
            self.stream.synchronize()  # this stream's own queued work, not the training step's
            images = torch.stack(decode_jpeg(views, device=self.device))
            labels = labels.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return images, labels, done

    def _ready(self, job) -> Batch:
        images, labels, done = job.result()
        if done is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(done)
            images.record_stream(current)
            labels.record_stream(current)
        return Batch(images, labels)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# Images held out of a training set that comes without a validation split: a fixed choice
# (its own seed, not the run's), so every run on a dataset validates on the same images.
HOLDOUT_SEED = 0
HOLDOUT_MAX = 5000  # the default: 10% of the training set, at most 5,000 images
EVAL_SPLITS = ("train", "val", "test")


def holdout_size(n: int, holdout: int) -> int:
    """Images to hold out of ``n`` training images; ``holdout`` < 0 asks for the default."""
    h = min(HOLDOUT_MAX, n // 10) if holdout < 0 else holdout
    if h >= n:
        raise AlexNetError(f"--holdout {h} leaves no training images (the training set has {n})")
    return h


def split_indices(n: int, holdout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, held-out validation) indices of a set of ``n`` images, each sorted."""
    h = holdout_size(n, holdout)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return perm[h:].sort().values, perm[:h].sort().values


def _limit(indices: torch.Tensor, limit: int, seed: int | None = None) -> torch.Tensor:
    """At most ``limit`` of ``indices`` (0: all): the first ones, or with ``seed`` a seeded
    random choice (for folders, whose order is by class), kept in order."""
    if not limit or limit >= len(indices):
        return indices
    if seed is None:
        return indices[:limit]
    keep = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:limit]
    return indices[keep.sort().values]


@dataclass
class Splits:
    """The splits of a dataset that were asked for (None where absent or not asked for)."""

    classes: list[str]
    train: Batches | None
    val: Batches | None  # the data's own val split, or ``holdout`` images held out of train
    test: Batches | None  # the data's test split, if it has one
    holdout: int  # images held out of the training set for ``val`` (0: the data has a val split)

    def get(self, name: str) -> Batches:
        batches = getattr(self, name) if name in EVAL_SPLITS else None
        if batches is None:
            raise AlexNetError(f"the data has no {name!r} split")
        return batches

    def describe_val(self) -> str:
        if self.val is None:
            return "no validation split"
        if self.holdout:
            return (f"validation: {self.val.num_images:,} images held out of the training set "
                    f"(fixed choice, seed {HOLDOUT_SEED})")
        return f"validation: the data's val split ({self.val.num_images:,} images)"

    def close(self) -> None:
        for b in (self.train, self.val, self.test):
            if b is not None:
                b.close()


@dataclass
class Request:
    """What ``build`` is asked for: which splits, how many images, in which batches."""

    splits: tuple[str, ...] = ("train", "val")
    batch_size: int = 128
    eval_batch_size: int = 0  # 0: batch_size
    holdout: int = -1  # held-out validation images when the data has no val split; -1: the default
    limit_train: int = 0
    limit_val: int = 0  # also limits test
    workers: int = -1
    gpu_decode: bool = False
    cache: str = "none"  # packed data: decode once into memory (cache.py): none, auto, gpu, host
    cache_format: str = "auto"  # the cache's pixels: rgb, 420 (half the bytes), auto (rgb where it fits)
    seed: int = 0
    rank: int = 0
    world: int = 1
    fashion_mnist_dir: str | None = None
    train_in_order: bool = False  # the training split read as an evaluation reads it: every image once, in order


def build(data: str, resize: int, device: torch.device, req: Request) -> Splits:
    """The splits of ``data`` ('fashion-mnist', a packed dataset, or a class-per-folder tree
    with train/ and optionally val/ and test/) that ``req`` asks for, as batches on ``device``.
    Without a val split, validation images are held out of the training set."""
    bad = [s for s in req.splits if s not in EVAL_SPLITS]
    if bad:
        raise AlexNetError(f"unknown split {bad[0]!r}; choose from {', '.join(EVAL_SPLITS)}")
    root = os.path.expanduser(data)
    packed_data = data not in ("fashion-mnist", cifar10.NAME) and is_packed(root)
    if req.gpu_decode and not (packed_data and read_meta(root)["encoding"] == "jpeg"):
        raise AlexNetError(f"--gpu-decode reads packed JPEG datasets (alexnet prepare); {data!r} is not one")
    if req.gpu_decode and device.type != "cuda":
        raise AlexNetError("--gpu-decode needs a CUDA device")
    if data == "fashion-mnist":
        return _tensor_splits(lambda split: fashion_mnist.load(split, req.fashion_mnist_dir),
                              fashion_mnist.CLASSES, resize, device, req)
    if cifar10.is_cifar10(data):
        return _tensor_splits(lambda split: cifar10.load(split, data), cifar10.CLASSES, resize, device, req)
    if packed_data:
        return _packed_splits(root, resize, device, req)
    if not os.path.isdir(root):
        raise AlexNetError(f"data folder {data!r} not found (expected 'fashion-mnist', CIFAR-10's binary release "
                           "or a folder with train/)")
    return _folder_splits(root, resize, device, req)


def _batching(req: Request, device: torch.device, train: bool) -> dict:
    size = req.batch_size if train else (req.eval_batch_size or req.batch_size)
    shuffled = train and not req.train_in_order  # training: a new order every epoch, whole batches only
    return dict(batch_size=size, shuffle=shuffled, drop_last=shuffled, device=device, seed=req.seed, rank=req.rank,
                world=req.world)


def _train_val_indices(n: int, has_val: bool, req: Request, limit_seed: int | None) -> tuple:
    """(training indices, held-out validation indices or None, holdout count) with the limits applied.
    ``limit_seed``: the training limit is a random choice by that seed (so that every seed of an
    experiment draws its own subset), and the validation limit a fixed random choice (for data
    in class order, such as folders, the first N would be a few classes)."""
    if has_val:
        return _limit(torch.arange(n), req.limit_train, limit_seed), None, 0
    train_idx, val_idx = split_indices(n, req.holdout)
    val_seed = None if limit_seed is None else HOLDOUT_SEED
    return _limit(train_idx, req.limit_train, limit_seed), _limit(val_idx, req.limit_val, val_seed), len(val_idx)


@dataclass
class _Source:
    """What the three kinds of data differ in: their classes, which splits they hold and how
    many images each, how a split's chosen images become batches, and how a limited val or test
    split is drawn (the first N, or a fixed random choice for files in class order)."""

    classes: list[str]
    splits: Callable[[], set[str]]
    count: Callable[[str], int]
    batches: Callable[[str, torch.Tensor, bool], Batches]  # (split, its images' indices, train)
    limit_seed: int | None = None


def _assemble(src: _Source, req: Request) -> Splits:
    """The splits ``req`` asks for, the same way for every source: without a val split of its
    own, validation images are held out of the training split (and the limits applied)."""
    have = src.splits()
    train = val = test = None
    holdout = 0
    if "train" in req.splits or ("val" in req.splits and "val" not in have):
        train_idx, val_idx, holdout = _train_val_indices(src.count("train"), "val" in have, req, req.seed)
        if "train" in req.splits:
            train = src.batches("train", train_idx, True)
        if "val" in req.splits and "val" not in have:
            val = src.batches("train", val_idx, False)

    def whole(split: str) -> Batches:
        return src.batches(split, _limit(torch.arange(src.count(split)), req.limit_val, src.limit_seed), False)

    if "val" in req.splits and "val" in have:
        val = whole("val")
    if "test" in req.splits and "test" in have:
        test = whole("test")
    return Splits(src.classes, train, val, test, holdout)


def _tensor_splits(load: Callable[[str], tuple[torch.Tensor, torch.Tensor]], classes: tuple[str, ...],
                   resize: int, device: torch.device, req: Request) -> Splits:
    """A dataset held in memory as a training and a test split (Fashion-MNIST: 60,000 and
    10,000 images; CIFAR-10: 50,000 and 10,000). ``load(split)`` gives uint8 images (N, C, h, w)
    and labels; each split is read once."""
    loaded = functools.lru_cache(maxsize=None)(load)

    def batches(split: str, indices: torch.Tensor, train: bool) -> Batches:
        x, y = loaded(split)
        return TensorBatches(x[indices], y[indices], resize, **_batching(req, device, train))

    return _assemble(_Source(list(classes), lambda: {"train", "test"}, lambda split: len(loaded(split)[1]),
                             batches), req)


def _packed_splits(root: str, resize: int, device: torch.device, req: Request) -> Splits:
    meta = read_meta(root)
    if meta["size"] != resize:
        raise AlexNetError(f"packed dataset {root} holds {meta['size']}-px images, but --resize is {resize}")

    def batches(split: str, indices: torch.Tensor, train: bool) -> Batches:
        from . import cache

        where, form = cache.choose(req.cache, len(indices), meta["size"], device, req.cache_format)
        data = PackedSplit(root, split, decode_later=req.gpu_decode and where == "none")
        if where != "none":  # decoded once, gathered from memory every epoch
            from .augment_triton import fuses

            pixels = cache.decode_all(data, indices, where, device, req.workers, form)
            planes = form == "420" and train and not req.train_in_order and fuses(device)  # converted as it crops
            return cache.CachedBatches(pixels, data.labels[indices], planes, **_batching(req, device, train))
        return PackedBatches(data, req.workers, indices=indices, **_batching(req, device, train))

    return _assemble(_Source(meta["classes"], lambda: set(meta["splits"]),
                             lambda split: meta["splits"][split]["count"], batches), req)


def _folder_splits(root: str, resize: int, device: torch.device, req: Request) -> Splits:
    classes = find_classes(Path(root) / "train")

    @functools.lru_cache(maxsize=None)
    def listed(split: str) -> ImageFolder:  # each split's files listed once
        return ImageFolder(root, split, resize, classes=classes)

    def batches(split: str, indices: torch.Tensor, train: bool) -> Batches:
        return FolderBatches(listed(split), req.workers, indices=indices, **_batching(req, device, train))

    def present() -> set[str]:
        return {s for s in ("train", "val", "test") if os.path.isdir(os.path.join(root, s))}

    # files are in class order: a limited val/test split is a fixed random choice, not the first classes
    source = _Source([printable(c) for c in classes], present, lambda split: len(listed(split)), batches,
                     limit_seed=HOLDOUT_SEED)  # names as recorded and shown
    return _assemble(source, req)


def image_sum(batches: Batches, max_images: int) -> tuple[torch.Tensor, int]:
    """The sum (float64, (3, S, S), 0-255 scale) and count of at most ``max_images`` of
    ``batches``' images, taken in a fixed shuffled order of their own: this process's part
    of the mean image (the trainer sums the parts of all processes)."""
    total, count = None, 0
    passing = batches.one_pass(shuffle=True, epoch=-1)  # a fixed order of its own, not an epoch's
    try:
        for batch in passing:
            if batch.labels.numel() == 0:
                continue
            x = to_rgb(batch.images[: max_images - count]).to(torch.float64)
            s = x.sum(0)
            total = s if total is None else total + s
            count += x.shape[0]
            if count >= max_images:
                break
    finally:
        passing.close()  # restores the split's settings now, not when collected
    if total is None:
        raise AlexNetError("no readable training images to compute the mean image from")
    return total, count
