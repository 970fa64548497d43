"""CIFAR-10's binary release: tiny files in its format, read as the real ones would be."""

import hashlib
import tarfile

import numpy as np
import pytest
import torch

from alexnet import AlexNetError
from alexnet.data import cifar10
from alexnet.data.loader import Request, build


def _records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` records of random images and labels, and what they hold as (N, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    raw = b"".join(bytes([labels[i]]) + images[i].tobytes() for i in range(n))  # R plane, G, B; rows in order
    return raw, images, labels


def _write_release(folder, per_file: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True)
    truth = {}
    for split, names in cifar10.FILES.items():
        parts = []
        for i, name in enumerate(names):
            raw, images, labels = _records(per_file, seed=10 * (split == "test") + i)
            (folder / name).write_bytes(raw)
            parts.append((images, labels))
        truth[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    (folder / "batches.meta.txt").write_text("\n".join(cifar10.CLASSES) + "\n")
    return truth


def test_records_are_read_as_label_then_red_green_blue_planes(tmp_path):
    """One hand-made record: label 7, red rising along each row, green down the columns, blue 9."""
    r = np.tile(np.arange(32, dtype=np.uint8), (32, 1))
    g = r.T.copy()
    b = np.full((32, 32), 9, dtype=np.uint8)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in cifar10.FILES["train"] + cifar10.FILES["test"]:
        (folder / name).write_bytes(bytes([7]) + r.tobytes() + g.tobytes() + b.tobytes())
    images, labels = cifar10.load("test", str(tmp_path))  # the parent of the extracted folder works too
    assert images.shape == (1, 3, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [7]
    assert images[0, 0, 5, 20] == 20 and images[0, 1, 5, 20] == 5 and images[0, 2, 5, 20] == 9
    assert cifar10.load("train", str(folder))[0].shape == (5, 3, 32, 32)  # five training files


def test_the_folder_and_the_checked_archive_give_the_same_splits(tmp_path, monkeypatch):
    folder = tmp_path / "x" / "cifar-10-batches-bin"
    truth = _write_release(folder)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    for source in (str(folder), str(archive)):
        for split in ("train", "test"):
            images, labels = cifar10.load(split, source)
            assert np.array_equal(images.numpy(), truth[split][0]) and np.array_equal(labels.numpy(), truth[split][1])
    monkeypatch.setenv(cifar10.ENV_VAR, str(archive))
    splits = build("cifar10", 32, torch.device("cpu"), Request(splits=("train", "val", "test"), batch_size=4,
                                                               holdout=6))
    assert splits.classes == list(cifar10.CLASSES)
    assert (splits.train.num_images, splits.val.num_images, splits.test.num_images) == (24, 6, 6)
    seen = torch.cat([b.images for b in splits.val])  # the held-out images are training images
    assert all(any(torch.equal(s, torch.from_numpy(t)) for t in truth["train"][0]) for s in seen)


def test_a_damaged_release_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_release(folder)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"not the release")
    with pytest.raises(AlexNetError, match=r"its MD5 is .*, the published one c32a1d4ab5d03f1284b67883e8d87530"):
        cifar10.load("train", str(archive))
    (folder / "test_batch.bin").write_bytes((folder / "test_batch.bin").read_bytes()[:-100])
    with pytest.raises(AlexNetError, match="test_batch.bin is not a CIFAR-10 batch file"):
        cifar10.load("test", str(folder))
    (folder / "test_batch.bin").write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(AlexNetError, match="test_batch.bin has label 12"):
        cifar10.load("test", str(folder))
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(AlexNetError, match="cannot read CIFAR-10 file .*data_batch_3.bin"):
        cifar10.load("train", str(folder))
    monkeypatch.delenv(cifar10.ENV_VAR, raising=False)
    with pytest.raises(AlexNetError, match=r"--data cifar10 reads \$ALEXNET_CIFAR10, which is not set"):
        cifar10.load("train")


def test_class_folders_are_not_taken_for_the_binary_release(image_tree):
    assert not cifar10.is_cifar10(str(image_tree))
