"""Write an ImageNet-shaped folder of real photographs for benchmarks.

ImageNet's training JPEGs average about 400x350 px at quality ~90; this writes
500x375 JPEGs (q90) cut at random from scikit-image's sample photographs, in
class folders under OUT/train and OUT/val. Usage:

    python benchmarks/make_images.py OUT --classes 10 --per-class 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def photos() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
        img = getattr(data, name)()
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(img)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    sources = photos()
    for split, count in (("train", args.per_class), ("val", args.val_per_class)):
        for c in range(args.classes):
            folder = Path(args.out) / split / f"class{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                src = Image.fromarray(sources[(c + i) % len(sources)])
                scale = rng.uniform(1.0, 2.0)
                big = src.resize((int(src.width * scale), int(src.height * scale)), Image.BILINEAR)
                left = rng.integers(0, max(1, big.width - 500))
                top = rng.integers(0, max(1, big.height - 375))
                crop = big.crop((left, top, left + 500, top + 375))
                crop.save(folder / f"{i:05d}.JPEG", quality=90)


if __name__ == "__main__":
    main()
