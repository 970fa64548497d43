"""Class-per-folder image trees: ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg``.

This is the usual ImageNet layout (and torchvision's ``ImageFolder``). Each image
is decoded with Pillow, converted to RGB (grayscale, palette and CMYK images
become 3 channels), its shorter side resized to ``resize`` and the center
``resize`` x ``resize`` square kept: the paper's preprocessing. Images smaller
than that are scaled up.

Unreadable files. A file with an image extension that cannot be decoded
(corrupt, truncated, not an image) is skipped: the loader drops it from its
batch, counts it, and the count is printed and logged per epoch (``skipped``).
It never stops training. Files without an image extension are ignored. An empty
class folder, or a split with no classes, is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, ImageFile

from ..errors import AlexNetError

# What Pillow raises for a corrupt, truncated or non-image file: the "unreadable" of the policy above.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


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
        files = sorted(
            str(Path(root) / f)
            for root, _, names in os.walk(folder, followlinks=True)
            for f in names
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise AlexNetError(f"class folder {folder} has no images")
        samples.extend((f, label) for f in files)
    return samples


def load_image(path: str, size: int) -> torch.Tensor:
    """Decode, RGB, shorter side to ``size``, center square crop. uint8 (3, size, size).

    Raises OSError / ValueError (Pillow's errors) for unreadable files."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is unreadable, not half-grey
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None if scale > 0.5 else 3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).contiguous()


class ImageFolder(torch.utils.data.Dataset):
    """Preprocessed uint8 images of one split; unreadable files yield ``None`` images."""

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

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        path, label = self.samples[index]
        try:
            return load_image(path, self.resize), label, path
        except UNREADABLE:
            return None, label, path
