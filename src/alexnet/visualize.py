"""Pictures: the conv1 kernels (the paper's Fig. 3) and a run's training curves."""

from __future__ import annotations

from pathlib import Path

import torch

from .training.checkpoint import load_model
from .training.rundir import RunDir
from .models.summary import kernel_grid
from .files import atomic_write


def conv1_kernels(source: str | Path, out: str | Path) -> None:
    from PIL import Image

    model, _, _ = load_model(source)
    first = next(m for m in model.features if isinstance(m, torch.nn.Conv2d))
    grid = kernel_grid(first.weight)
    atomic_write(out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))


def read_metrics(run: str | Path) -> list[dict]:
    return RunDir(run).read_metrics(required=True)


def curves(run: str | Path, out: str | Path) -> None:
    """Four panels per epoch: train and validation loss, top-1 and top-5 error, learning rate."""
    from .reproduce.figures import pyplot, save_figure

    plt = pyplot()
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
    save_figure(fig, out, dpi=90)
