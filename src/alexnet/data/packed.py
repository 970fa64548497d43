"""Packed datasets: ``alexnet prepare SRC DST`` and the reader training uses.

A class-per-folder tree is decoded once, preprocessed as the paper does
(shorter side to S, center S x S crop; S = 256) and stored as JPEG (quality a
flag) or raw uint8 in a few large flat shard files (memory-mappable; the reader
uses positioned reads, which keep its resident memory bounded):

    DST/meta.json                  format, classes, size, encoding, counts, skipped files
    DST/train-00000.bin            the images of one shard, back to back
    DST/train-00000.npz            its index: byte offsets, labels, source-list digest,
                                   a CRC-32 per image and a SHA-256 of the whole .bin

A packed dataset knows when it has been damaged since: opening a split compares each
shard's size with its index (a truncated or replaced shard is refused at once), and every
image read is checked against its CRC-32 (measured at 0.5% of reading and decoding it:
benchmarks/packed_checksum.py), so bytes overwritten in place stop the run with a one-line
error naming the shard. ``verify(DST)`` (``alexnet prepare --verify``) hashes every shard.

Preparing is resumable: a shard counts as done once its ``.npz`` exists (it is
written, atomically, after its ``.bin``), so re-running ``prepare`` finishes the
job without redoing finished shards and never leaves a half-written file.
``meta.json`` is written last: a directory without it is not a dataset yet.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import warnings
import zlib
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import atomic_write, atomic_write_text, printable
from ..errors import AlexNetError
from ..progress import Progress
from .folder import UnreadableImage, find_classes, list_images, load_image, resolve_workers

# torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they are what
# this module (and --gpu-decode) uses, so the note is not repeated in every worker.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

FORMAT = "alexnet-packed/1"
ENCODINGS = ("jpeg", "raw")


def read_meta(path: str | Path) -> dict:
    """A packed dataset's ``meta.json`` (format, classes, size, encoding, splits)."""
    try:
        return json.loads((Path(path) / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise AlexNetError(f"{path} is not a packed dataset (no readable meta.json)") from None


def is_packed(path: str | Path) -> bool:
    try:
        return read_meta(path).get("format") == FORMAT
    except AlexNetError:
        return False


@dataclass
class _ShardJob:
    dst: str
    name: str  # e.g. "train-00003"
    samples: list[tuple[str, int]]
    size: int
    encoding: str
    quality: int
    digest: str


def _digest(samples: list[tuple[str, int]]) -> str:
    h = hashlib.sha1()
    for path, label in samples:
        h.update(os.fsencode(path) + f"\t{label}\n".encode())  # the name's own bytes, whatever its encoding
    return h.hexdigest()


def _encode(image: torch.Tensor, encoding: str, quality: int) -> bytes:
    if encoding == "raw":
        return image.numpy().tobytes()
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_shard(job: _ShardJob) -> tuple[str, int, list[str], int]:
    """Encode one shard; returns (name, images written, skipped files, bytes)."""
    dst = Path(job.dst)
    offsets, labels, crcs, skipped, sha = [0], [], [], [], hashlib.sha256()

    def write_bin(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for path, label in job.samples:
                try:
                    data = _encode(load_image(path, job.size), job.encoding, job.quality)
                except UnreadableImage as e:
                    skipped.append(f"{printable(path)} ({e})")
                    continue
                f.write(data)
                sha.update(data)
                crcs.append(zlib.crc32(data))
                offsets.append(offsets[-1] + len(data))
                labels.append(label)

    atomic_write(dst / f"{job.name}.bin", write_bin)

    def write_index(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, offsets=np.asarray(offsets, np.int64), labels=np.asarray(labels, np.int32),
                     crc32=np.asarray(crcs, np.uint32), sha256=np.asarray(sha.hexdigest()),
                     skipped=np.asarray(skipped, dtype=str), digest=np.asarray(job.digest))

    atomic_write(dst / f"{job.name}.npz", write_index)
    return job.name, len(labels), skipped, offsets[-1]


def _read_index(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rerun(root: Path) -> str:
    return f"re-run alexnet prepare SRC {printable(root)} to rewrite it"


def _check_size(root: Path, name: str, index: dict) -> None:
    """The cheap check: the shard is there and has the size its index gives."""
    path = root / f"{name}.bin"
    try:
        size = os.stat(path).st_size
    except OSError:
        raise AlexNetError(f"packed shard {printable(path)} is missing; {_rerun(root)}") from None
    if size != int(index["offsets"][-1]):
        raise AlexNetError(f"packed shard {printable(path)} is damaged: {size:,} bytes where its index says "
                           f"{int(index['offsets'][-1]):,} (truncated or replaced after prepare); {_rerun(root)}")


def _check_hash(root: Path, name: str, index: dict) -> None:
    """The full check: the SHA-256 of the whole shard (shards written before checksums pass)."""
    _check_size(root, name, index)
    if "sha256" not in index:
        return
    sha = hashlib.sha256()
    with open(root / f"{name}.bin", "rb") as f:
        while chunk := f.read(1 << 24):
            sha.update(chunk)
    if sha.hexdigest() != str(index["sha256"]):
        raise AlexNetError(f"packed shard {printable(root / name)}.bin is damaged: its bytes do not match the "
                           f"checksum written by prepare; {_rerun(root)}")


def verify(root: str | Path, progress: bool = True) -> dict:
    """Hash every shard of a packed dataset; returns {"shards", "bytes", "damaged": [one line each]}."""
    root, meta = Path(root), read_meta(root)
    names = [n for info in meta["splits"].values() for n in info["shards"]]
    damaged, nbytes = [], 0
    bar = Progress(len(names), "verify", enabled=progress)
    for name in names:
        try:
            index = _read_index(root / f"{name}.npz")
            _check_hash(root, name, index)
            nbytes += int(index["offsets"][-1])
        except AlexNetError as e:
            damaged.append(str(e))
        except (OSError, ValueError, KeyError):
            damaged.append(f"packed index {printable(root / name)}.npz is damaged or missing; {_rerun(root)}")
        bar.update(1)
    bar.close()
    return {"shards": len(names), "bytes": nbytes, "damaged": damaged}


def _check_settings(src: Path, dst: Path, encoding: str, quality: int, size: int, shard_size: int) -> None:
    if encoding not in ENCODINGS:
        raise AlexNetError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    if not 1 <= quality <= 100:
        raise AlexNetError(f"--quality must be in 1..100, got {quality}")
    if size < 1 or shard_size < 1:
        raise AlexNetError("--size and --shard-size must be positive")
    if not src.is_dir():
        raise AlexNetError(f"source folder {src} not found")
    if dst.resolve() == src.resolve():
        raise AlexNetError("the packed dataset must go to another directory than its source")


def _source_splits(src: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """The classes (train/'s folders) and each split's (path, label) list, in a fixed shuffle:
    every shard and every prefix mixes the classes."""
    classes = find_classes(src / "train")
    splits = {"train": list_images(src / "train", classes)}
    for name in ("val", "test"):
        if (src / name).is_dir():
            extra = sorted(set(find_classes(src / name)) - set(classes))
            if extra:
                raise AlexNetError(f"{src / name} has classes not in train/: {', '.join(extra[:5])}")
            splits[name] = list_images(src / name, classes)
    for split, samples in splits.items():
        order = np.random.default_rng(0).permutation(len(samples))
        splits[split] = [samples[i] for i in order]
    return classes, splits


def _shard_jobs(dst: Path, splits: dict, settings: dict, shard_size: int,
                verify: bool = False) -> tuple[list[_ShardJob], int]:
    """The shards still to write, and how many images the finished ones hold (a shard is
    finished when its index exists, matches its source list, and its .bin passes the size
    check, or with ``verify`` the full hash: a damaged shard is written again)."""
    jobs, done = [], 0
    for split, samples in splits.items():
        for i in range(0, len(samples), shard_size):
            chunk = samples[i:i + shard_size]
            job = _ShardJob(str(dst), f"{split}-{i // shard_size:05d}", chunk, settings["size"],
                            settings["encoding"], settings["quality"], _digest(chunk))
            if _finished(dst, job, verify):
                done += len(chunk)
            else:
                jobs.append(job)
    return jobs, done


def _finished(dst: Path, job: _ShardJob, verify: bool) -> bool:
    try:
        index = _read_index(dst / f"{job.name}.npz")
        (_check_hash if verify else _check_size)(dst, job.name, index)
        return str(index["digest"]) == job.digest
    except (AlexNetError, OSError, ValueError, KeyError):
        return False  # missing, damaged, or of other files: written again


def _write_shards(jobs: list[_ShardJob], workers: int, bar: Progress) -> None:
    if workers == 1:
        for _, written, skipped, _ in map(_write_shard, jobs):
            bar.update(written + len(skipped))
        return
    with get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        for _, written, skipped, _ in pool.imap_unordered(_write_shard, jobs):
            bar.update(written + len(skipped))


def _split_meta(dst: Path, split: str, count: int, shard_size: int) -> dict:
    """A packed split's counts, shards, skipped files and size, read back from its indexes."""
    shards, images, skipped, nbytes = [], 0, [], 0
    for i in range(0, count, shard_size):
        name = f"{split}-{i // shard_size:05d}"
        index = _read_index(dst / f"{name}.npz")
        shards.append(name)
        images += len(index["labels"])
        skipped += [str(s) for s in index["skipped"]]
        nbytes += int(index["offsets"][-1])
    return {"count": images, "shards": shards, "skipped": skipped, "bytes": nbytes}


def prepare(src: str | Path, dst: str | Path, size: int = 256, encoding: str = "jpeg", quality: int = 90,
            workers: int = -1, shard_size: int = 10_000, progress: bool = True, verify: bool = False) -> dict:
    """Pack ``src/train`` and, where present, ``src/val`` and ``src/test`` into ``dst``;
    returns the metadata written. Shards already written are kept when they pass the size
    check (with ``verify``, the full hash); the others are written again."""
    src, dst = Path(src), Path(dst)
    _check_settings(src, dst, encoding, quality, size, shard_size)
    classes, splits = _source_splits(src)
    dst.mkdir(parents=True, exist_ok=True)
    for stale in dst.glob(".*.tmp"):  # left by a process killed mid-write
        stale.unlink()
    settings = {"size": size, "encoding": encoding, "quality": quality if encoding == "jpeg" else None}
    plan = {"source": str(src.resolve()), **settings, "classes": classes,
            "splits": {k: _digest(v) for k, v in splits.items()}, "shard_size": shard_size}
    plan_path = dst / "plan.json"
    if plan_path.is_file() and json.loads(plan_path.read_text()) != plan:
        raise AlexNetError(f"{dst} holds a packing of other files or settings; remove it or choose another DST")
    atomic_write_text(plan_path, json.dumps(plan, indent=1))

    jobs, done = _shard_jobs(dst, splits, {**settings, "quality": quality}, shard_size, verify)
    bar = Progress(sum(len(s) for s in splits.values()), "prepare", enabled=progress, log_every=10)
    bar.update(done)
    start = time.perf_counter()
    if jobs:
        _write_shards(jobs, max(resolve_workers(workers), 1), bar)
    bar.close()
    meta = {"format": FORMAT, **settings, "classes": [printable(c) for c in classes],
            "splits": {split: _split_meta(dst, split, len(samples), shard_size) for split, samples in splits.items()}}
    atomic_write_text(dst / "meta.json", json.dumps(meta, indent=1))  # last: the dataset exists from here
    meta["seconds"] = time.perf_counter() - start
    return meta


def split_encoded(data: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    """``encoded_batch``'s one buffer as one view per image (no copies)."""
    bounds = offsets.tolist()
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty uint8 tensor for a decoded batch: in a loader process, in shared memory, where
    sending it to the training process copies nothing (a batch made in private memory is
    copied into shared memory as it is sent: 50 MB for 256 images at 256 px)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class PackedSplit(torch.utils.data.Dataset):
    """One split of a packed dataset; ``batch(indices)`` returns uint8 (B, 3, S, S).
    ``decode_later``: the loader gets JPEG batches still encoded, to decode on the training
    device (``--gpu-decode``)."""

    def __init__(self, root: str | Path, split: str, decode_later: bool = False) -> None:
        root = Path(root)
        self.decode_later = decode_later
        self.meta = read_meta(root)
        if split not in self.meta["splits"]:
            raise AlexNetError(f"packed dataset {root} has no {split!r} split")
        info = self.meta["splits"][split]
        self.root, self.size, self.encoding = root, self.meta["size"], self.meta["encoding"]
        self.classes = self.meta["classes"]
        starts, labels, shard_of, self._offsets, self._crcs = [], [], [], [], []
        for s, name in enumerate(info["shards"]):
            index = _read_index(root / f"{name}.npz")
            _check_size(root, name, index)
            self._offsets.append(index["offsets"])
            self._crcs.append(index.get("crc32"))  # None for shards written before checksums
            labels.append(index["labels"])
            shard_of.append(np.full(len(index["labels"]), s, np.int32))
            starts.append(np.arange(len(index["labels"]), dtype=np.int64))
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64))
        self._shard = np.concatenate(shard_of)  # image i is image _local[i] of shard _shard[i]
        self._local = np.concatenate(starts)
        self._names = info["shards"]
        self._files: list[int] | None = None  # descriptors, opened lazily in each process

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:  # loader workers open their own descriptors
        return {**self.__dict__, "_files": None}

    def __del__(self) -> None:
        for fd in self.__dict__.get("_files") or ():
            os.close(fd)

    def _bytes(self, i: int) -> bytearray:
        """Image ``i``'s stored bytes, read with one positioned read (``os.preadv``).

        Reading rather than memory-mapping keeps every process's resident memory
        bounded: a map would hold each page it has touched, and over an epoch that is
        the whole shard. The kernel's page cache still serves repeated reads."""
        buf = bytearray(self._size(i))
        self._read_into(i, memoryview(buf))
        return buf

    def _size(self, i: int) -> int:
        s, j = self._shard[i], self._local[i]
        return int(self._offsets[s][j + 1]) - int(self._offsets[s][j])

    def _read_into(self, i: int, buf: memoryview) -> None:
        """Image ``i``'s bytes into ``buf`` (exactly its size), checked against its checksum."""
        if self._files is None:
            self._files = [os.open(self.root / f"{n}.bin", os.O_RDONLY) for n in self._names]
        s, j = self._shard[i], self._local[i]
        start = int(self._offsets[s][j])
        if os.preadv(self._files[s], [buf], start) != len(buf):
            raise AlexNetError(f"packed shard {printable(self.root / self._names[s])}.bin is shorter than its index "
                               f"says (truncated after it was opened); {_rerun(self.root)}")
        if self._crcs[s] is not None and zlib.crc32(buf) != int(self._crcs[s][j]):
            raise AlexNetError(f"packed shard {printable(self.root / self._names[s])}.bin is damaged: image {j}'s "
                               f"bytes do not match the checksum written by prepare; {_rerun(self.root)}")

    def encoded(self, indices: list[int]) -> list[torch.Tensor]:
        return split_encoded(*self.encoded_batch(indices))

    def encoded_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images' stored bytes end to end in one uint8 tensor, and the B + 1 offsets where
        each begins (and the last ends): a batch crosses from a loader process as two tensors
        (two shared-memory blocks), not one per image."""
        offsets = np.zeros(len(indices) + 1, np.int64)
        np.cumsum([self._size(i) for i in indices], out=offsets[1:])
        data = np.empty(int(offsets[-1]), np.uint8)
        view = memoryview(data)
        for k, i in enumerate(indices):
            self._read_into(i, view[offsets[k]:offsets[k + 1]])
        return torch.from_numpy(data), torch.from_numpy(offsets)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded uint8 images (B, 3, S, S) and labels, decoded on the CPU."""
        from torchvision.io import decode_jpeg

        b, s = len(indices), self.size
        if self.encoding == "raw":
            images = _batch_buffer((b, 3, s, s))
            for k, i in enumerate(indices):
                images[k].view(-1).copy_(torch.frombuffer(self._bytes(i), dtype=torch.uint8))
            return images, self.labels[indices]
        # decode_jpeg's images are HWC pixels seen as CHW: stacked as HWC they are copied as they
        # lie (no transpose), and the batch is (B, 3, S, S) with channels-last strides
        decoded = [image.permute(1, 2, 0) for image in decode_jpeg(self.encoded(indices))]
        images = torch.stack(decoded, out=_batch_buffer((b, s, s, 3)))
        return images.permute(0, 3, 1, 2), self.labels[indices]

    def __getitem__(self, indices: list[int]):
        """Decoded (images, labels); with ``decode_later`` set, the still-encoded JPEGs
        (``encoded_batch``'s bytes and offsets) and labels instead, for decoding on the
        training device."""
        if self.decode_later and self.encoding == "jpeg":
            return self.encoded_batch(indices), self.labels[indices]
        return self.batch(indices)
