"""Fine-tuning versus training from scratch, same budget, on data the network never saw.

Source: a network trained on Fashion-MNIST (the main job's run, `make main`).
Target: scikit-learn's handwritten digits (1,797 8x8 images, 10 classes), written
as class folders with a seeded 80/20 train/val split. Each arm trains for the
same number of epochs on the same images; top-1 on the validation split,
center crop, over several seeds.

    python benchmarks/finetune_digits.py runs/fashion-mnist --epochs 5 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.training.config import TrainConfig, apply_overrides
from alexnet.training.train import fit


def write_digits(root: Path, seed: int = 0) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    n_val = len(order) // 5
    for rank, i in enumerate(order):
        split = "val" if rank < n_val else "train"
        folder = root / split / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="trained run to fine-tune from (e.g. runs/fashion-mnist)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/finetune-digits")
    args = p.parse_args()

    common = dict(epochs=args.epochs, batch_size=64, workers=0, schedule="cosine", log_every=1e9)
    arms = {
        "fine-tune, convolutions frozen (--freeze features)":
            dict(weights=args.source, freeze="features", lr=0.001, head_lr_mult=10.0),
        "fine-tune, all layers (alexnet finetune defaults)":
            dict(weights=args.source, freeze="none", lr=0.001, head_lr_mult=10.0),
        "from scratch (same network, kaiming init)":
            dict(variant="paper", resize=76, crop=67, init="kaiming", lr=0.01),
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits")
        results = {}
        for name, arm in arms.items():
            scores = []
            for seed in args.seeds:
                out = Path(args.out) / f"{name.split(',')[0].split(' (')[0].replace(' ', '-')}-{list(arms).index(name)}-seed{seed}"
                cfg = apply_overrides(TrainConfig(), {**common, **arm, "data": str(data), "seed": seed, "out": str(out)})
                scores.append(fit(cfg)["final"]["top1"])
            results[name] = scores
    print(f"\n| arm ({args.epochs} epochs on 1,438 digit images, val 359) | top-1, mean of {len(args.seeds)} seeds | per seed |")
    print("|---|---|---|")
    for name, scores in results.items():
        print(f"| {name} | {100 * statistics.mean(scores):.1f}% | "
              f"{', '.join(f'{100 * s:.1f}' for s in scores)} |")


if __name__ == "__main__":
    main()
