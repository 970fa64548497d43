"""Fashion-MNIST, read from its IDX files (as Debian's ``dataset-fashion-mnist`` ships them).

The files are gzipped IDX (Debian recompressed them, so upstream checksums of the
.gz do not match; the IDX headers are checked instead). The directory is, in
order: the ``--fashion-mnist-dir`` flag, the ``ALEXNET_FASHION_MNIST`` environment
variable, ``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import AlexNetError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "ALEXNET_FASHION_MNIST"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}


def resolve_dir(directory: str | None = None) -> Path:
    path = Path(directory or os.environ.get(ENV_VAR) or DEFAULT_DIR)
    if not path.is_dir():
        raise AlexNetError(
            f"Fashion-MNIST directory {str(path)!r} not found; install Debian's dataset-fashion-mnist "
            f"or name the directory with --fashion-mnist-dir or ${ENV_VAR}")
    return path


def _open(path: Path) -> bytes:
    for candidate in (path.with_name(path.name + ".gz"), path):
        if candidate.is_file():
            try:
                with (gzip.open(candidate) if candidate.suffix == ".gz" else open(candidate, "rb")) as f:
                    return f.read()
            except (OSError, EOFError) as e:
                raise AlexNetError(f"cannot read {candidate}: {e}") from None
    raise AlexNetError(f"Fashion-MNIST file {path.name}(.gz) not found in {path.parent}")


def read_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: magic 0x0000080N, N dimension sizes, data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise AlexNetError(f"{name} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise AlexNetError(f"{name} is truncated: header says {tuple(dims)}, found {data.size} bytes")
    return data.reshape(tuple(dims))


def load(split: str, directory: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 (N, 1, 28, 28) and labels as int64 (N,) for 'train' or 'test'."""
    images_name, labels_name, count = FILES[split]
    root = resolve_dir(directory)
    images = read_idx(_open(root / images_name), images_name)
    labels = read_idx(_open(root / labels_name), labels_name)
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise AlexNetError(f"unexpected Fashion-MNIST shapes in {root}: {images.shape}, {labels.shape}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
