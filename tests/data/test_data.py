import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet import AlexNetError
from alexnet.data import fashion_mnist
from alexnet.data.folder import load_image
from alexnet.data.loader import Request, build, epoch_order, resize_batch, split_indices
from alexnet.training.train import mean_image


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


def test_folder_preprocessing_grayscale_and_small_images(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((10, 30), 200, np.uint8), mode="L").save(tmp_path / "g.png")
    x = load_image(str(tmp_path / "g.png"), 64)
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8  # gray -> RGB, 10 px side -> 64
    assert torch.all(x == 200)
    wide = np.zeros((50, 100, 3), np.uint8)
    wide[:, 50:] = 255  # right half white: the center crop keeps a 50/50 split
    Image.fromarray(wide).save(tmp_path / "w.png")
    y = load_image(str(tmp_path / "w.png"), 32)
    assert y[:, :, :14].max() < 20 and y[:, :, -14:].min() > 235


def test_unreadable_files_are_skipped_and_counted(image_tree):
    bad = image_tree / "train" / "cat"
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    good = (bad / "1.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "notes.txt").write_text("ignored: not an image extension")
    splits = build(str(image_tree), 48, torch.device("cpu"), Request(batch_size=4, workers=0))
    assert splits.classes == ["cat", "dog", "fish"]
    seen, skipped = 0, []
    splits.train.drop_last = False
    for batch in splits.train:
        seen += batch.labels.numel()
        skipped += batch.skipped
        assert batch.images.shape[1:] == (3, 48, 48)
    assert seen == 12 and sorted(Path(p).name for p in skipped) == ["corrupt.jpg (truncated or corrupt)",
                                                                     "truncated.jpg (truncated or corrupt)"]


def test_empty_class_folder_and_missing_paths_are_errors(image_tree, tmp_path):
    with pytest.raises(AlexNetError, match="not found"):
        build(str(tmp_path / "missing"), 48, torch.device("cpu"), Request(batch_size=4))
    (image_tree / "train" / "empty").mkdir()
    with pytest.raises(AlexNetError, match="empty has no images"):
        build(str(image_tree), 48, torch.device("cpu"), Request(batch_size=4))
    (image_tree / "train" / "empty").rmdir()
    (image_tree / "val" / "extra").mkdir()
    with pytest.raises(AlexNetError, match="not in train"):
        build(str(image_tree), 48, torch.device("cpu"), Request(batch_size=4))


def test_epoch_order_is_seeded_and_sharded():
    a, b = epoch_order(100, True, 0, 3), epoch_order(100, True, 0, 3)
    assert torch.equal(a, b) and not torch.equal(a, epoch_order(100, True, 0, 4))
    shards = [epoch_order(101, True, 0, 3, rank, 2) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 50
    assert len(set(shards[0].tolist()) | set(shards[1].tolist())) == 100  # disjoint, one image dropped


def test_mean_image_is_the_exact_mean_of_its_sample(fmnist_dir):
    """The mean image is the mean of exactly ``samples`` training images, taken in the fixed
    order the estimate uses (epoch -1 of the training order)."""
    req = Request(batch_size=256, fashion_mnist_dir=fmnist_dir)
    splits = build("fashion-mnist", 32, torch.device("cpu"), req)
    mean = mean_image(splits.train, 1000)  # not a multiple of the batch: the last batch is cut
    x, _ = fashion_mnist.load("train", fmnist_dir)
    train_idx, _ = split_indices(len(x), -1)
    chosen = train_idx[epoch_order(len(train_idx), True, 0, -1)[:1000]]
    exact = resize_batch(x[chosen], 32).double().mean(0) / 255
    assert mean.shape == (3, 32, 32)
    torch.testing.assert_close(mean, exact.expand(3, -1, -1).float(), rtol=0, atol=1e-6)
    assert mean[:, 16, 16].mean() > mean[:, 0, 0].mean() + 0.2  # garments in the middle, background at edges


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


def test_folder_without_val_holds_out_and_reads_test(image_tree):
    """A folder with train/ and test/ but no val/: validation is held out of train/ (10%),
    test/ is its own split; with val/ the data's own split is used."""
    import shutil

    cpu = torch.device("cpu")
    with_val = build(str(image_tree), 48, cpu, Request(splits=("train", "val", "test"), batch_size=4, workers=0))
    assert with_val.holdout == 0 and with_val.val.num_images == 12 and with_val.test is None
    shutil.move(str(image_tree / "val"), str(image_tree / "test"))
    for cls in ("cat", "dog", "fish"):
        for i in range(4, 10):
            shutil.copy(image_tree / "train" / cls / "0.png", image_tree / "train" / cls / f"x{i}.png")
    s = build(str(image_tree), 48, cpu, Request(splits=("train", "val", "test"), batch_size=4, workers=0))
    assert s.holdout == 3 and (s.train.num_images, s.val.num_images, s.test.num_images) == (27, 3, 12)
    assert not set(s.train.indices.tolist()) & set(s.val.indices.tolist())
    assert all(Path(p).parts[-3] == "test" for p, _ in s.test.dataset.samples)


def test_a_limited_split_of_a_folder_samples_every_class(tmp_path):
    """Files are listed class by class: --limit-val N must not be the first N files (it once was,
    and 1,000 CIFAR-10 validation images were airplanes and cars only, 75% 'accuracy')."""
    from conftest import write_tree

    tree = write_tree(tmp_path / "d", per_class=12, size=40, classes=("a", "b", "c", "d"))
    (tree / "val").rename(tree / "test")
    s = build(str(tree), 40, torch.device("cpu"),
              Request(splits=("val", "test"), batch_size=8, workers=0, holdout=24, limit_val=8))
    for split in (s.val, s.test):
        labels = torch.cat([b.labels for b in split])
        assert len(labels) == 8 and len(set(labels.tolist())) >= 3, labels.tolist()
    again = build(str(tree), 40, torch.device("cpu"),
                  Request(splits=("val", "test"), batch_size=8, workers=0, holdout=24, limit_val=8, seed=5))
    assert torch.equal(again.test.indices, s.test.indices) and torch.equal(again.val.indices, s.val.indices)


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


def test_the_mean_image_pass_reads_every_image_and_leaves_the_training_passes_alone():
    """The mean image reads its own fixed order, every image (no batch dropped), even when the
    split sits inside an epoch; the next training pass is the one it would have been."""
    from alexnet.data.loader import TensorBatches, image_sum

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 8, 8).contiguous()
    batches = TensorBatches(images, torch.arange(10), 8, batch_size=4, shuffle=True, drop_last=True,
                            device=torch.device("cpu"))
    batches.set_epoch(3, start=1)
    expected = [b.labels.tolist() for b in batches]
    total, count = image_sum(batches, 100)
    assert count == 10 and total[0, 0, 0].item() == sum(range(10))
    assert [b.labels.tolist() for b in batches] == expected and len(expected) == 1


def test_a_repeated_split_shows_every_image_as_often_in_one_long_shuffled_epoch():
    """Batches.repeat (the benchmarks' loader rows over a small packed set): each epoch holds
    every image `times` times, the copies shuffled together rather than passed one after another."""
    from alexnet.data.loader import TensorBatches

    images = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    batches = TensorBatches(images, torch.arange(10), 8, batch_size=5, shuffle=True, drop_last=True,
                            device=torch.device("cpu"), indices=torch.tensor([1, 3, 5, 7, 9]))
    batches.repeat(4)
    seen = [label for b in batches for label in b.labels.tolist()]
    assert len(batches) == 4 and sorted(seen) == sorted([1, 3, 5, 7, 9] * 4)
    assert any(len(set(seen[i:i + 5])) < 5 for i in range(0, 20, 5))  # copies mixed, not five passes in turn
