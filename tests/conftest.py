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
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
