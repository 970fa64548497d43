"""Using a trained network: evaluation of a weights file on a dataset."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import load_model
from .data import loader as data_loader
from .data.transforms import EvalCrops
from .errors import AlexNetError
from .evaluate import EvalResult, evaluate
from .train import Runtime, resolve_device
from . import distributed


def evaluate_weights(weights: str | Path, data: str | None = None, ten_crop: bool = False, split: str = "val",
                     batch_size: int = 128, device: str = "auto", workers: int = -1, limit: int = 0,
                     fashion_mnist_dir: str | None = None, progress: bool = True) -> EvalResult:
    """Top-1/top-5 of a run directory or weights file on ``data``'s ``split``, center or 10-crop.

    ``data`` defaults to the dataset the network was trained on; its classes must
    be the network's, in the same order."""
    if split not in ("val", "train"):
        raise AlexNetError(f"--split must be val or train, got {split!r}")
    if batch_size < 1:
        raise AlexNetError(f"--batch-size must be at least 1, got {batch_size}")
    model, normalizer, meta = load_model(weights)
    config = meta.get("config") or {}
    data = data or config.get("data", {}).get("data")
    if not data:
        raise AlexNetError(f"{weights} does not record its dataset; pass --data")
    fm_dir = fashion_mnist_dir or config.get("data", {}).get("fashion_mnist_dir") or None
    dev = resolve_device(device)
    splits = data_loader.build(data, meta["resize"], batch_size, dev, workers=workers, train=split == "train",
                               limit_train=limit, limit_val=limit, fashion_mnist_dir=fm_dir,
                               eval_batch_size=max(1, batch_size // (10 if ten_crop else 1)))
    if list(splits.classes) != list(meta["classes"]):
        raise AlexNetError(f"the classes of {data!r} ({len(splits.classes)}) are not the network's "
                           f"({len(meta['classes'])}): {', '.join(splits.classes[:3])}... vs "
                           f"{', '.join(meta['classes'][:3])}...")
    if split == "train":
        batches, name = splits.train, "train"
        batches.shuffle, batches.drop_last = False, False
    else:
        batches, name = splits.val, splits.val_name
    model.to(dev)
    rt = Runtime(dev, None, False, distributed.Env())
    return evaluate(model, batches, EvalCrops(normalizer.to(dev), meta["input_size"], ten_crop), split=name,
                    autocast=rt.autocast(), progress=progress)
