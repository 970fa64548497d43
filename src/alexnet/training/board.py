"""TensorBoard event files for a training run (``alexnet train --tensorboard``).

Written to ``RUN/tensorboard/`` by the first process only (rank 0 under torchrun):

- ``train/loss``, ``train/top1``: every 10 steps, over the images of those steps (rank 0's
  share of the batch), against the global step;
- per epoch: ``val/top1``, ``val/top5``, ``val/loss``, ``train/epoch_loss``, ``train/epoch_top1``,
  ``lr``, ``images_per_sec``, and the conv1 kernels as an image (``conv1``: the paper's
  Fig. 3 layout for the two-tower network);
- at the end, the run's hyperparameters with its final validation metrics (the HParams tab).

A resumed run discards the events its previous process wrote after the checkpoint it
resumes from (TensorBoard's ``purge_step``), so curves never double back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import AlexNetError
from ..models.summary import kernel_grid

EVERY = 10  # steps between training points: the loop's own host sync happens at this cadence


class Board:
    """A SummaryWriter for the run, or nothing at all when disabled (other ranks, no flag)."""

    def __init__(self, directory: Path, enabled: bool, steps_per_epoch: int, resume_step: int = 0) -> None:
        self.writer, self.steps_per_epoch = None, steps_per_epoch
        self._last = (0.0, 0.0, 0)  # loss sum, correct, images at the previous point
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AlexNetError("--tensorboard needs the tensorboard package: "
                               "pip install 'alexnet[tensorboard]'") from None
        # events after the checkpoint (steps > resume_step) were written by a process that then died
        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge)

    def step(self, epoch: int, state) -> None:
        """After a training step: a point every ``EVERY`` steps (``state`` is the loop's EpochState)."""
        if self.writer is None or state.step % EVERY:
            return
        loss_sum, correct = state.sums.tolist()
        last_loss, last_correct, last_images = self._last if state.step > EVERY else (0.0, 0.0, 0)
        images = state.images - last_images
        self._last = (loss_sum, correct, state.images)
        if images > 0:
            step = epoch * self.steps_per_epoch + state.step
            self.writer.add_scalar("train/loss", (loss_sum - last_loss) / images, step)
            self.writer.add_scalar("train/top1", (correct - last_correct) / images, step)

    def epoch(self, record: dict, model: nn.Module) -> None:
        if self.writer is None:
            return
        step = record["epoch"] * self.steps_per_epoch
        for tag, key in (("val/top1", "val_top1"), ("val/top5", "val_top5"), ("val/loss", "val_loss"),
                         ("train/epoch_loss", "train_loss"), ("train/epoch_top1", "train_top1"), ("lr", "lr"),
                         ("images_per_sec", "images_per_sec")):
            self.writer.add_scalar(tag, record[key], step)
        conv1 = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        self.writer.add_image("conv1", kernel_grid(_full_conv1(model, conv1)), step, dataformats="HWC")
        self.writer.flush()

    def finish(self, hparams: dict, final: dict) -> None:
        if self.writer is None:
            return
        flat = {k: v for k, v in _flatten(hparams).items() if isinstance(v, (int, float, str, bool))}
        metrics = {f"hparam/val_{k}": final[k] for k in ("top1", "top5", "loss") if k in final}
        self.writer.add_hparams(flat, metrics, run_name=".")
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _full_conv1(model: nn.Module, first: nn.Conv2d) -> torch.Tensor:
    """conv1's kernels: both towers' when the network is split over two devices."""
    towers = getattr(model, "towers", None)
    if towers is None:
        return first.weight
    return torch.cat([next(m for m in t.modules() if isinstance(m, nn.Conv2d)).weight.detach().cpu()
                      for t in towers])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
