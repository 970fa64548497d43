"""alexnet.data.folder: class folders, their images decoded and sized, odd folders refused."""

from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet import AlexNetError
from alexnet.data.folder import load_image
from alexnet.data.loader import Request, build


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
