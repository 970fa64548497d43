"""Pictures: the conv1 kernels (the paper's Fig. 3) and a run's training curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model
from .files import atomic_write
from .errors import AlexNetError


def kernel_grid(weight: torch.Tensor, columns: int = 16, scale: int = 4, pad: int = 2) -> np.ndarray:
    """RGB uint8 image of conv1 kernels (out, 3, k, k), each stretched to [0, 255] on its own.

    With the ``paper`` network's 96 kernels and 16 columns, the top three rows are
    tower 1 (kernels 0-47) and the bottom three tower 2, as in the paper's Fig. 3."""
    w = weight.detach().float().cpu()
    n, _, k, _ = w.shape
    rows = -(-n // columns)
    cell = k * scale + pad
    grid = np.full((rows * cell + pad, columns * cell + pad, 3), 255, np.uint8)
    for i in range(n):
        kern = w[i].permute(1, 2, 0).numpy()
        lo, hi = kern.min(), kern.max()
        kern = (kern - lo) / (hi - lo + 1e-12)
        tile = np.kron((kern * 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))
        r, c = divmod(i, columns)
        grid[pad + r * cell: pad + r * cell + k * scale, pad + c * cell: pad + c * cell + k * scale] = tile
    return grid


def conv1_kernels(source: str | Path, out: str | Path) -> None:
    from PIL import Image

    model, _, _ = load_model(source)
    first = next(m for m in model.features if isinstance(m, torch.nn.Conv2d))
    grid = kernel_grid(first.weight)
    atomic_write(out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))


def read_metrics(run: str | Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise AlexNetError(f"{path} not found: --curves needs a run directory")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise AlexNetError(f"{path} has no epochs yet")
    return records


def curves(run: str | Path, out: str | Path) -> None:
    """Four panels per epoch: train and validation loss, top-1 and top-5 error, learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = read_metrics(run)
    epochs = [r["epoch"] for r in rec]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in rec], "o-", label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in rec], "o-", label="validation")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(epochs, [100 * (1 - r["train_top1"]) for r in rec], "o-", label="train")
    axes[1].plot(epochs, [100 * r["val_top1_error"] for r in rec], "o-", label="validation")
    axes[1].set_title("top-1 error (%)")
    axes[1].legend()
    axes[2].plot(epochs, [100 * r["val_top5_error"] for r in rec], "o-", color="C1")
    axes[2].set_title("validation top-5 error (%)")
    axes[3].plot(epochs, [r["lr"] for r in rec], "o-", color="C2")
    axes[3].set_yscale("log")
    axes[3].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(str(run))
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
