"""Shared fixtures: small real-image trees and a Fashion-MNIST check."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data import fashion_mnist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # serve_load's client and server

# Two test processes side by side (pytest-xdist) each take one core; the Python processes their
# tests start take one thread each too, instead of one per core on top of the other process's.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# The suite writes up to about 3.2 GB at once under the temporary directory (full-size networks'
# weights, checkpoints and Caffe files; measured with `make test`, 2026-11-27). Short of room it
# fails in a dozen unrelated places; this says why, once, before anything runs.
NEEDS_FREE_GB = 4.0


def pytest_sessionstart(session):
    import shutil
    import tempfile

    tmp = session.config.option.basetemp or tempfile.gettempdir()
    free = shutil.disk_usage(Path(tmp) if Path(tmp).exists() else Path(tmp).parent).free / 1e9
    if free < NEEDS_FREE_GB:
        pytest.exit(f"only {free:.1f} GB free under {tmp}; the suite needs about {NEEDS_FREE_GB:.0f} GB there "
                    "(set TMPDIR or --basetemp to a roomier place)", returncode=2)


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
def _keep_the_huge_page_switch():
    """``cli.main`` sets THP_MEM_ALLOC_ENABLE for its process; a test calling it in-process must
    not leave it set for the tests (and the processes they start) that follow."""
    saved = os.environ.get("THP_MEM_ALLOC_ENABLE")
    yield
    if saved is None:
        os.environ.pop("THP_MEM_ALLOC_ENABLE", None)
    else:
        os.environ["THP_MEM_ALLOC_ENABLE"] = saved


@pytest.fixture(autouse=True)
def _quiet_threads():
    # Two threads, or one per worker when pytest-xdist runs two test processes side by side.
    share = 2 if "PYTEST_XDIST_WORKER" not in os.environ else 1
    torch.set_num_threads(max(1, min(share, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fmnist_dir) -> Path:
    """A small paper network trained on a Fashion-MNIST subset (67-px input)."""
    from alexnet.training.config import TrainConfig, apply_overrides
    from alexnet.training.train import fit

    out = tmp_path_factory.mktemp("trained") / "run"
    fit(apply_overrides(TrainConfig(), dict(resize=76, crop=67, epochs=3, batch_size=32, limit_train=512,
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


# ---------------------------------------------------------------------------
# A tree of odd and hostile files (the file policy of data/folder.py).

# What each odd file must become: an RGB colour the loaded image must be close to (checked at
# the center), or None for files the policy skips. The good photographs come from write_tree.
ODD_CONVERTED = {
    "cmyk.jpg": (255, 0, 0),           # CMYK JPEG of pure red
    "palette.png": (0, 160, 0),        # palette image
    "transparent.png": (255, 255, 255),  # fully transparent RGBA: laid over white
    "palette-transparent.gif": (255, 255, 255),  # palette with a transparent index
    "sixteen.png": (128, 128, 128),    # 16-bit grayscale at 32896/65535
    "animated.gif": (200, 0, 0),       # frames red then blue: the first frame
    "UPPER.JPG": (0, 0, 200),          # upper-case extension
    "thin.png": (90, 90, 90),          # 1 x 3000 pixels: extreme shape
}
ODD_SKIPPED = {
    "empty.jpg": "empty file",
    "truncated.jpg": "truncated",
    "text.png": "not an image",
    "dangling.jpg": "a dangling link",
    "bomb.png": "larger than",
    "pipe.jpg": "not a regular file",
}
ODD_BYTES_NAME = b"caf\xe9-latin1.png"  # not UTF-8: read like any other (a grey square)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb: the data are never there)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def exif_rotated_jpeg(path: Path) -> None:
    """A JPEG stored on its side (left half dark, right half light) with EXIF orientation 6
    (rotate 90 degrees clockwise to view): seen upright, its top half is dark."""
    a = np.zeros((48, 64, 3), np.uint8)
    a[:, 32:] = 240
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, exif=exif, quality=95)


def write_odd_files(folder: Path) -> None:
    """Every odd and hostile kind of file of the policy, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    solid = lambda rgb, size=(40, 40): Image.new("RGB", size, rgb)
    solid((255, 0, 0)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    solid((0, 160, 0)).quantize(4).save(folder / "palette.png")
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(folder / "transparent.png")
    p = Image.new("P", (40, 40), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.save(folder / "palette-transparent.gif", transparency=1)
    Image.fromarray(np.full((40, 40), 32896, np.uint16)).save(folder / "sixteen.png")
    frames = [solid((200, 0, 0)), solid((0, 0, 200))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    solid((0, 0, 200)).save(folder / "UPPER.JPG", quality=95)
    Image.new("L", (1, 3000), 90).save(folder / "thin.png")
    exif_rotated_jpeg(folder / "exif-rotated.jpg")
    Image.new("L", (40, 40), 128).save(os.fsencode(folder) + b"/" + ODD_BYTES_NAME, format="PNG")
    (folder / "empty.jpg").write_bytes(b"")
    solid((10, 10, 10)).save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("not an image at all\n")
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "bomb.png").write_bytes(_png_with_size(40_000, 40_000))
    os.mkfifo(folder / "pipe.jpg")
    (folder / "folder.jpg").mkdir()  # a directory named like an image: searched, holds nothing
    (folder / "loop").symlink_to(folder)  # a link back up: visited once
    (folder / "notes.txt").write_text("ignored: not an image extension\n")


def write_odd_tree(root: Path) -> Path:
    """write_tree's photographs (two classes), with every odd file added to train/cat and val/dog."""
    write_tree(root, per_class=4, classes=("cat", "dog"))
    write_odd_files(root / "train" / "cat")
    write_odd_files(root / "val" / "dog")
    return root


# ---------------------------------------------------------------------------
# alexnet serve: a small trained network and a photograph.

@pytest.fixture(scope="module")
def serve_run(tmp_path_factory) -> Path:
    """LeNet-5 trained briefly on photographs of three classes (cat, dog, fish)."""
    from alexnet.cli import main  # the command line, as a user trains it

    root = tmp_path_factory.mktemp("serve")
    data = write_tree(root / "data", per_class=8, size=48)
    run = root / "run"
    assert main(["train", "--data", str(data), "--variant", "lenet5", "--resize", "36", "--crop", "32", "--epochs",
                 "2", "--batch-size", "8", "--workers", "0", "--init", "torchvision", "--out", str(run),
                 "--log-every", "1000"]) == 0
    return run


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=90)
    return path


def run_interpreted(code: str) -> dict:
    """Run ``code`` in a child Python with TRITON_INTERPRET=1 (Triton reads it before compiling
    anything, so it cannot be set in this process) and return the JSON its last line prints."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# A paper network small enough to train in seconds on the CPU (67 px, 128 images).
TINY = dict(variant="paper", resize=76, crop=67, batch_size=32, limit_train=128, limit_val=64, init="kaiming",
            mean_samples=128, lr=0.01)


def tiny_config(out, **kw):
    from alexnet.training.config import TrainConfig, apply_overrides

    return apply_overrides(TrainConfig(), {**TINY, "out": str(out), **kw})


def write_cifar_release(folder, per_class_train=40, per_class_test=10):
    """CIFAR-10's binary format; class k is a colour of its own plus noise, learnable in a few steps."""
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 226, (10, 3))

    def records(per_class):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = colours[labels][:, :, None, None] + rng.normal(0, 25, (len(labels), 3, 32, 32))
        images = images.clip(0, 255).astype(np.uint8)
        return b"".join(bytes([int(y)]) + x.tobytes() for x, y in zip(images, labels))

    folder.mkdir(parents=True)
    train_raw = records(per_class_train)
    size = len(train_raw) // 5
    from alexnet.data import cifar10

    for i, name in enumerate(cifar10.FILES["train"]):
        (folder / name).write_bytes(train_raw[i * size:(i + 1) * size])
    (folder / "test_batch.bin").write_bytes(records(per_class_test))
    return folder


def explains_a_photo(weights, tmp_path, stages: int) -> None:
    """``alexnet explain`` on imported weights: every stage's maps and the three attributions
    for a real photograph, named with ImageNet's classes."""
    import json

    from PIL import Image
    from skimage import data

    from alexnet.cli import main
    from alexnet.training.checkpoint import load_model

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    out = tmp_path / "explain"
    assert main(["explain", str(weights), str(tmp_path / "cat.png"), "--out", str(out), "--ig-steps", "2",
                 "--device", "cpu", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["stages"]) == stages and summary["target"]["class"] in load_model(weights)[2]["classes"]
    assert {"occlusion", "gradcam_conv5", "integrated_gradients"} <= {k.split(".")[0] for k in summary["files"]}
    assert all((out / f).stat().st_size > 0 for f in summary["files"].values())
