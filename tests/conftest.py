"""Shared fixtures: small real-image trees and a Fashion-MNIST check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data import fashion_mnist


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fmnist_dir() -> str:
    """The Debian Fashion-MNIST files; the README's test command installs them."""
    path = fashion_mnist.resolve_dir(None)
    return str(path)


def sample_photos() -> list[np.ndarray]:
    """Real photographs shipped with scikit-image (RGB uint8)."""
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee()]


def write_tree(root: Path, per_class: int = 4, size: int = 40, classes=("cat", "dog", "fish")) -> Path:
    """A class-per-folder tree with train/ and val/ made from crops of real photos."""
    photos = sample_photos()
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            photo = photos[c % len(photos)]
            for i in range(per_class):
                y = rng.integers(0, photo.shape[0] - 200)
                x = rng.integers(0, photo.shape[1] - 200)
                im = Image.fromarray(photo[y:y + 200, x:x + 200]).resize((size, size + 8 * (i % 2)))
                im.save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "data")


@pytest.fixture(autouse=True)
def _quiet_threads():
    # Two threads, or one per worker when pytest-xdist runs two test processes side by side.
    share = 2 if "PYTEST_XDIST_WORKER" not in os.environ else 1
    torch.set_num_threads(max(1, min(share, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fmnist_dir) -> Path:
    """A small paper network trained on a Fashion-MNIST subset (67-px input)."""
    from alexnet.config import TrainConfig, apply_overrides
    from alexnet.train import fit

    out = tmp_path_factory.mktemp("trained") / "run"
    fit(apply_overrides(TrainConfig(), dict(resize=76, crop=67, epochs=3, batch_size=32, limit_train=1024,
                                            limit_val=128, mean_samples=256, init="kaiming", schedule="cosine",
                                            out=str(out), fashion_mnist_dir=fmnist_dir, log_every=1e9)))
    return out


def write_fmnist_pngs(folder: Path, split: str, count: int, fmnist_dir: str, start: int = 0) -> list[tuple[Path, int]]:
    """Real Fashion-MNIST images as PNG files, with their labels."""
    x, y = fashion_mnist.load(split, fmnist_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + count):
        path = folder / f"{split}{i:05d}.png"
        Image.fromarray(x[i, 0].numpy()).save(path)
        out.append((path, int(y[i])))
    return out
