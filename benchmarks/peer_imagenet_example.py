"""The peer of `benchmarks/vs_imagenet_example.py`: the recipe of PyTorch's own ImageNet example
(pytorch/examples, `imagenet/main.py -a alexnet`), written out for a class-folder tree.

    python benchmarks/peer_imagenet_example.py DIR [--epochs 1] [-b 128] [-j 2] [--lr 0.01]

What it does, as the example does on one device without distribution: torchvision's `alexnet`
(fp32, NCHW); `ImageFolder` over DIR/train with `RandomResizedCrop(224)`, a horizontal flip,
`ToTensor` and ImageNet's mean/std, shuffled by a `DataLoader` with `-j` workers and pinned
memory; cross-entropy, SGD with momentum 0.9 and weight decay 1e-4, the learning rate divided
by 10 every 30 epochs; after each epoch a validation pass over DIR/val (`Resize(256)`,
`CenterCrop(224)`) computing top-1 (the example also counts top-5), and a checkpoint (model, optimiser, best top-1)
written with `torch.save`. The example's README gives alexnet 0.01 as its learning rate.
It prints one JSON line: the epochs' seconds and the last validation top-1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def loaders(root: Path, batch: int, workers: int) -> tuple[DataLoader, DataLoader]:
    normalize = transforms.Normalize(MEAN, STD)
    train = datasets.ImageFolder(root / "train", transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    val = datasets.ImageFolder(root / "val", transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize]))
    return (DataLoader(train, batch, shuffle=True, num_workers=workers, pin_memory=True),
            DataLoader(val, batch, shuffle=False, num_workers=workers, pin_memory=True))


def train_epoch(model, loader, optimizer) -> None:
    model.train()
    for images, target in loader:
        loss = F.cross_entropy(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def validate(model, loader) -> float:
    model.eval()
    correct = total = 0
    for images, target in loader:
        correct += (model(images).argmax(1) == target).sum().item()
        total += len(target)
    return correct / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--out", type=Path, default=Path("."))
    a = p.parse_args()
    torch.manual_seed(0)
    model = models.alexnet()
    optimizer = torch.optim.SGD(model.parameters(), a.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    train, val = loaders(a.data, a.batch_size, a.workers)
    seconds, best, top1 = [], 0.0, 0.0
    for epoch in range(a.epochs):
        start = time.perf_counter()
        train_epoch(model, train, optimizer)
        top1 = validate(model, val)
        scheduler.step()
        best = max(best, top1)
        torch.save({"epoch": epoch + 1, "arch": "alexnet", "state_dict": model.state_dict(), "best_acc1": best,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   a.out / "checkpoint.pth.tar")
        seconds.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"epoch_seconds": seconds, "val_top1": top1}))


if __name__ == "__main__":
    main()
