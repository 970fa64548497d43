"""What the input's scale does to a fresh network: the spread of its logits and its first loss.

    python benchmarks/input_scale.py [--variant torchvision] [--init kaiming] [--size 67 --crop 63]

64 Fashion-MNIST training images, preprocessed as `alexnet train` does (shorter side to
--size, a --crop crop), minus their mean image: once on the 0-255 scale (the paper's mean-image
normalisation) and once divided by their pixel spread (unit scale, which He's init assumes).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from alexnet import create_model
from alexnet.data import fashion_mnist
from alexnet.data.loader import resize_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="torchvision")
    p.add_argument("--init", default="kaiming")
    p.add_argument("--size", type=int, default=67)
    p.add_argument("--crop", type=int, default=63)
    args = p.parse_args()
    torch.manual_seed(0)
    x, y = fashion_mnist.load("train")
    images = resize_batch(x[:64].expand(-1, 3, -1, -1), args.size)[:, :, :args.crop, :args.crop].float()
    centred = images - images.mean(0, keepdim=True)
    model = create_model(args.variant, num_classes=10, init=args.init).eval()
    with torch.no_grad():
        for name, z in (("0-255 minus the mean image", centred), ("unit scale", centred / centred.std())):
            logits = model(z)
            print(f"{name:<28} input spread {z.std().item():6.2f}  logit spread {logits.std().item():.3f}  "
                  f"first loss {F.cross_entropy(logits, y[:64]).item():.3f}")


if __name__ == "__main__":
    main()
