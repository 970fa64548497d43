"""CIFAR-10 from its official binary release (Krizhevsky 2009, "Learning Multiple Layers of
Features from Tiny Images"), the format cuda-convnet was written for.

The release, ``cifar-10-binary.tar.gz``, holds ``cifar-10-batches-bin/`` with five training
files ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin`` and
``batches.meta.txt`` (the class names). Each file is 10,000 records of 3,073 bytes: the
label (0-9), then the 32x32 image as 1,024 red, 1,024 green and 1,024 blue bytes, each
plane row by row. Raw bytes, no pickle: nothing here runs code from the file.

Where the data is: ``--data`` names the archive, the extracted folder, or its parent; or
``--data cifar10`` with the environment variable ``ALEXNET_CIFAR10`` naming one of those.
The archive is checked against the MD5 the dataset's home page publishes before it is used.
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from ..errors import AlexNetError

NAME = "cifar10"
ENV_VAR = "ALEXNET_CIFAR10"
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # https://www.cs.toronto.edu/~kriz/cifar.html
FOLDER = "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}  # 10,000 each
SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE


def is_cifar10(data: str) -> bool:
    """Whether ``data`` names CIFAR-10's binary release: 'cifar10', the archive, or a folder
    holding ``data_batch_1.bin`` directly or in ``cifar-10-batches-bin/``."""
    if data == NAME:
        return True
    path = Path(os.path.expanduser(data))
    if path.is_file():
        return path.name.endswith(".tar.gz") and path.name.startswith("cifar-10-binary")
    return (path / FILES["train"][0]).is_file() or (path / FOLDER / FILES["train"][0]).is_file()


def resolve(data: str) -> Path:
    """The archive or the folder of .bin files that ``data`` names."""
    if data == NAME:
        value = os.environ.get(ENV_VAR)
        if not value:
            raise AlexNetError(f"--data cifar10 reads ${ENV_VAR}, which is not set: set it to CIFAR-10's binary "
                               f"release ({ARCHIVE} or its extracted {FOLDER}/), or pass that path as --data")
        data = value
    path = Path(os.path.expanduser(data))
    if path.is_dir() and not (path / FILES["train"][0]).is_file() and (path / FOLDER).is_dir():
        path = path / FOLDER
    if not path.exists():
        raise AlexNetError(f"CIFAR-10 not found at {str(path)!r}")
    return path


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_files(path: Path, names: tuple[str, ...]) -> list[bytes]:
    """The named members' bytes, from the folder or from the archive (read, never extracted)."""
    if path.is_dir():
        out = []
        for name in names:
            try:
                out.append((path / name).read_bytes())
            except OSError as e:
                raise AlexNetError(f"cannot read CIFAR-10 file {path / name}: {e.strerror or e}") from None
        return out
    md5 = _md5(path)
    if md5 != ARCHIVE_MD5:
        raise AlexNetError(f"{path} is not CIFAR-10's binary release: its MD5 is {md5}, the published one "
                           f"{ARCHIVE_MD5} (a damaged or different file)")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if f"{FOLDER}/{n}" not in members]
            if missing:
                raise AlexNetError(f"{path} holds no {FOLDER}/{missing[0]}")
            return [tar.extractfile(members[f"{FOLDER}/{n}"]).read() for n in names]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise AlexNetError(f"cannot read {path}: {e}") from None


def parse_records(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) from one file's records."""
    if len(raw) == 0 or len(raw) % RECORD:
        raise AlexNetError(f"{name} is not a CIFAR-10 batch file: {len(raw):,} bytes is not a whole number of "
                           f"{RECORD:,}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    if labels.max() >= len(CLASSES):
        raise AlexNetError(f"{name} has label {int(labels.max())}; CIFAR-10's are 0-9")
    return records[:, 1:].reshape(-1, 3, SIDE, SIDE), labels


def load(split: str, data: str = NAME) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,) for 'train' (50,000) or 'test' (10,000)."""
    path = resolve(data)
    names = FILES[split]
    parts = [parse_records(raw, name) for raw, name in zip(_read_files(path, names), names)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)
