"""alexnet.data.fashion_mnist: the IDX files, the real data set, and its held-out validation."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet import AlexNetError
from alexnet.data import fashion_mnist
from alexnet.data.loader import Request, build


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trip_and_truncation(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10000, 28, 28))
    labels = np.arange(10000) % 10
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = fashion_mnist.load("test", str(tmp_path))
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(images.astype(np.uint8))) and torch.equal(y, torch.from_numpy(labels))
    raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(AlexNetError, match="truncated"):
        fashion_mnist.load("test", str(tmp_path))


def test_real_fashion_mnist(fmnist_dir):
    x, y = fashion_mnist.load("test", fmnist_dir)
    assert x.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [1000] * 10  # the test set is balanced
    assert 60 < x.float().mean() < 90  # mostly dark background, real garments


def test_missing_fashion_mnist_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(AlexNetError, match="Fashion-MNIST directory"):
        fashion_mnist.load("train")


def test_fashion_mnist_validation_is_held_out_of_training(fmnist_dir):
    """5,000 training images, the same for every run, validate; the test set is apart."""
    cpu = torch.device("cpu")
    a = build("fashion-mnist", 28, cpu, Request(splits=("train", "val", "test"), batch_size=500,
                                                fashion_mnist_dir=fmnist_dir))
    b = build("fashion-mnist", 28, cpu, Request(batch_size=500, seed=7, fashion_mnist_dir=fmnist_dir))
    assert (a.train.num_images, a.val.num_images, a.test.num_images, a.holdout) == (55_000, 5_000, 10_000, 5_000)
    assert torch.equal(a.val.images, b.val.images)  # a fixed choice, whatever the run's seed
    train_keys = {bytes(img.numpy()) for img in a.train.images}
    val_keys = [bytes(img.numpy()) for img in a.val.images]
    assert sum(k in train_keys for k in val_keys) < 50  # disjoint (Fashion-MNIST has a few duplicate images)
    x, _ = fashion_mnist.load("test", fmnist_dir)
    assert torch.equal(a.test.images, x)
    assert "5,000 images held out of the training set" in a.describe_val()
    small = build("fashion-mnist", 28, cpu, Request(holdout=600, batch_size=500, fashion_mnist_dir=fmnist_dir))
    assert (small.train.num_images, small.val.num_images) == (59_400, 600)
    with pytest.raises(AlexNetError, match="leaves no training images"):
        build("fashion-mnist", 28, cpu, Request(holdout=60_000, fashion_mnist_dir=fmnist_dir))


def test_each_seed_draws_its_own_limited_training_set(fmnist_dir):
    """--limit-train N is a random choice of N training images by the run's seed (an experiment's
    seeds then differ in their data too), the same for the same seed; validation stays fixed."""
    def pick(seed):
        s = build("fashion-mnist", 28, torch.device("cpu"),
                  Request(batch_size=64, limit_train=500, limit_val=100, seed=seed, fashion_mnist_dir=fmnist_dir))
        return s.train.images, s.val.images

    (a, va), (b, vb), (c, _) = pick(0), pick(1), pick(0)
    assert len(a) == len(b) == 500 and torch.equal(a, c) and not torch.equal(a, b)
    assert torch.equal(va, vb)
