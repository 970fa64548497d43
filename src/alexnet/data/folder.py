"""Class-per-folder image trees: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``.

This is the usual ImageNet layout (and torchvision's ``ImageFolder``). Each image is
opened by ``load_image`` under the file policy below, its shorter side resized to
``resize`` and the center ``resize`` x ``resize`` square kept: the paper's preprocessing.
Images smaller than that are scaled up.

The file policy (every command that reads images follows it; docs/data.md, "Odd and hostile files"):
- *Ignored*: files without an image extension (``IMAGE_EXTENSIONS``, any case), hidden
  class folders. A folder named like an image is searched like any folder.
- *Converted*: every image becomes 8-bit RGB. Grayscale and 1-bit are repeated over three
  channels; palette images are expanded; CMYK is converted by Pillow; 16-bit (and 32-bit
  integer) images keep their top 8 bits, float images are read as 0..1; transparency is
  laid over white (as a browser shows it); an animated image gives its first frame; the
  EXIF orientation of a photograph is applied, so it is seen upright.
- *Skipped, named and counted*: a file that cannot be read as an image: missing or a
  dangling link, a directory or device file, empty, truncated, not an image, an image
  format Pillow cannot decode, or larger than ``MAX_PIXELS`` (decompression bombs). The
  loaders drop it from its batch; training logs the count per epoch, ``prepare`` lists
  the files in its metadata, ``predict`` and ``features`` name them on stderr and exit 1
  when a file the user named was among them. Nothing stops on one bad file.
- *An error* (one line, nothing written): a data folder with no class folders, an
  empty class folder, a split with no images.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..errors import AlexNetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# Pillow's own decompression-bomb threshold (about 89.5 megapixels, a 9,459 x 9,459 image); an
# image above it is skipped rather than decoded (Pillow alone would only warn up to twice that).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
ORIENTATION = 0x0112  # the EXIF tag
_TOO_LARGE = f"larger than {MAX_PIXELS:,} pixels: a decompression bomb?"


class UnreadableImage(Exception):
    """A file the policy skips; the message says why, in a few words."""


def resolve_workers(workers: int) -> int:
    """Image-decoding processes: ``workers``, or one per CPU core for -1 (every command's default)."""
    return (os.cpu_count() or 1) if workers < 0 else workers


def find_classes(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise AlexNetError(f"{split_dir} not found; a data folder needs train/ and val/ class-per-folder trees")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise AlexNetError(f"{split_dir} has no class folders")
    return classes


def list_images(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) for every image file, sorted; an empty class folder is an error."""
    samples = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue  # a val split may lack some of train's classes
        files = sorted(image_files(folder))
        if not files:
            raise AlexNetError(f"class folder {folder} has no images")
        samples.extend((f, label) for f in files)
    return samples


def image_files(folder: str | Path) -> list[str]:
    """Paths of the files with an image extension under ``folder``, following links to folders
    but never into a loop (a link to a parent folder is visited once)."""
    seen, found = set(), []
    for root, dirs, names in os.walk(folder, followlinks=True):
        st = os.stat(root)
        key = st.st_dev, st.st_ino
        if key in seen:
            dirs[:] = []
            continue
        seen.add(key)
        found += [os.path.join(root, f) for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def load_image(path: str, size: int) -> torch.Tensor:
    """Decode under the file policy, shorter side to ``size``, center square. uint8 (3, size, size).

    Raises ``UnreadableImage`` (with the reason) for any file the policy skips."""
    _check_regular_file(path)
    return _decoded(lambda: _open(path), size)


def load_or_reason(path: str, size: int) -> torch.Tensor | str:
    """``load_image``, or the reason the policy skips the file (a str): what the loaders carry."""
    try:
        return load_image(path, size)
    except UnreadableImage as e:
        return str(e)


def decode_image(data: bytes, size: int) -> torch.Tensor:
    """``load_image`` for an image held in memory (an upload to ``alexnet serve``)."""
    if not data:
        raise UnreadableImage("empty file")
    return _decoded(lambda: _open(io.BytesIO(data)), size)


def _decoded(opener: Callable[[], Image.Image], size: int) -> torch.Tensor:
    try:
        with opener() as im:
            _check_pixels(im)
            im = _upright_rgb(_draft(im, size))
            data = _center_square(im, size).tobytes()
    except UnreadableImage:
        raise
    except Image.DecompressionBombError:
        raise UnreadableImage(_TOO_LARGE) from None
    except Exception as e:  # noqa: BLE001 -- a hostile file may make a decoder raise anything
        raise UnreadableImage(_reason(e)) from None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1).contiguous()


def _check_regular_file(path: str) -> None:
    try:
        st = os.stat(path)  # follows links: a dangling one is "not found"
    except FileNotFoundError:
        raise UnreadableImage("a dangling link" if os.path.islink(path) else "not found") from None
    except OSError as e:
        raise UnreadableImage(e.strerror or type(e).__name__) from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableImage("a directory")
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImage("not a regular file")  # a pipe named x.jpg would block forever
    if st.st_size == 0:
        raise UnreadableImage("empty file")


def _open(path) -> Image.Image:
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is unreadable, not half-grey
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombWarning:
            raise Image.DecompressionBombError() from None


def _check_pixels(im: Image.Image) -> None:
    if im.width * im.height > MAX_PIXELS:
        raise UnreadableImage(f"{im.width:,} x {im.height:,}: {_TOO_LARGE}")
    if im.width < 1 or im.height < 1:
        raise UnreadableImage("an image with no pixels")


def _draft(im: Image.Image, size: int) -> Image.Image:
    """Let a large JPEG decode at 1/2, 1/4 or 1/8 scale, when that still leaves its shorter side
    at least ``size`` (libjpeg's DCT scaling: a 12-megapixel photo decodes ~10x faster)."""
    if im.format == "JPEG" and im.mode in ("RGB", "L"):
        scale = size / min(im.size)
        im.draft(im.mode, (math.ceil(im.width * scale), math.ceil(im.height * scale)))
    return im


def _upright_rgb(im: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, 8-bit RGB, transparency over white."""
    if im.getexif().get(ORIENTATION, 1) != 1:  # most files have none: no copy for them
        im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.int64)
        im = Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8), mode="L")
    elif im.mode == "F":
        im = Image.fromarray((np.clip(np.asarray(im), 0, 1) * 255 + 0.5).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        im = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    return im.convert("RGB")


def _center_square(im: Image.Image, size: int) -> Image.Image:
    """The center square of the shorter side, resized to ``size``: the crop is taken first, so an
    image of extreme shape (1 x 100,000) never becomes an enormous intermediate."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    return im.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None if size / side > 0.5 else 3.0)


def _reason(e: Exception) -> str:
    text = str(e).split("\n")[0]
    if "cannot identify image file" in text:
        return "not an image Pillow can read"
    if "truncated" in text.lower() or "broken data stream" in text or isinstance(e, EOFError):
        return "truncated or corrupt"
    return text[:100] or type(e).__name__


class ImageFolder(torch.utils.data.Dataset):
    """Preprocessed uint8 images of one split; a file the policy skips yields the reason (a str)
    in place of its image."""

    def __init__(self, root: str | Path, split: str, resize: int, classes: list[str] | None = None) -> None:
        split_dir = Path(root) / split
        self.classes = classes if classes is not None else find_classes(split_dir)
        if classes is not None:
            extra = sorted(set(find_classes(split_dir)) - set(classes))
            if extra:
                raise AlexNetError(f"{split_dir} has classes not in train/: {', '.join(extra[:5])}")
        self.samples = list_images(split_dir, self.classes)
        if not self.samples:
            raise AlexNetError(f"{split_dir} has no images")
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | str, int, str]:
        path, label = self.samples[index]
        return load_or_reason(path, self.resize), label, path
