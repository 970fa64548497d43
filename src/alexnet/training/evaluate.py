"""Top-1 / top-5 accuracy under the paper's test protocols.

``center``: one center crop per image. ``ten-crop``: the four corner and the
center patches and their horizontal reflections; the softmax outputs of the ten
are averaged (paper section 4.1) and that average is ranked. A ten-crop pass also
reports its center view alone, which is the center protocol's crop, so one pass
gives the paper's figure and Caffe's and torchvision's.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from ..data.loader import Batches
from ..data.transforms import CENTER_VIEW, EvalCrops
from ..progress import Progress


@dataclass
class EvalResult:
    top1: float  # accuracy in [0, 1]
    top5: float
    loss: float  # mean negative log-likelihood of the (averaged) softmax
    images: int
    skipped: int
    protocol: str  # "center" or "ten-crop"
    split: str
    center_top1: float | None = None  # ten-crop: the center view alone (the center protocol's figures)
    center_top5: float | None = None

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5

    def as_dict(self) -> dict:
        return {**asdict(self), "top1_error": self.top1_error, "top5_error": self.top5_error}

    def summary(self) -> str:
        return (f"{self.split} ({self.protocol}, {self.images} images): "
                f"top-1 {100 * self.top1:.2f}% (error {100 * self.top1_error:.2f}%), "
                f"top-5 {100 * self.top5:.2f}% (error {100 * self.top5_error:.2f}%)"
                + (f"; its center crop alone: top-1 {100 * self.center_top1:.2f}%, top-5 {100 * self.center_top5:.2f}%"
                   if self.center_top1 is not None else ""))


def average_views(logits: torch.Tensor, views: int) -> torch.Tensor:
    """Class probabilities of each image from the logits of its ``views`` crops (rows
    image-major, (B * V, classes)): the mean of the views' softmax outputs, as the paper's
    10-crop test does (section 4.1), not the softmax of the mean logits. (B, classes)."""
    return F.softmax(logits.float(), dim=1).view(-1, views, logits.shape[1]).mean(dim=1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have their label among the k highest scores, for each k
    (k is capped at the number of classes)."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top.eq(labels[:, None])
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def forward_views(model: nn.Module, x: torch.Tensor, chunk: int,
                   autocast: contextlib.AbstractContextManager | None, channels_last: bool) -> torch.Tensor:
    """The logits of ``x``'s views (B * V rows), ``chunk`` rows (a batch's images) a forward pass:
    the 10 crops of a batch as ten passes of the training batch's size, not one ten times its
    size. On a 2-core AVX2 CPU (AMD Zen 3, 2026-11-27; four rounds, the two ways alternating)
    the paper network's forward took 1.40-1.49 ms an image in passes of 128 and 1.62-1.88 in one
    pass of 1,280 (channels-last, 67 px: the larger pass's activations outgrow the caches)."""
    parts = []
    with autocast or contextlib.nullcontext():  # once: autocast casts the weights anew in each region
        for part in x.split(chunk):
            parts.append(model(part.contiguous(memory_format=torch.channels_last) if channels_last else part))
    return torch.cat(parts)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, crops: EvalCrops, split: str = "val",
             autocast: contextlib.AbstractContextManager | None = None, channels_last: bool = False,
             progress: bool = True, log_every: float = 30.0) -> EvalResult:
    """Accuracy of ``model`` over ``batches``; counts are summed across processes."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(7, dtype=torch.float64)  # top1, top5, nll, images, skipped, center view's top1, top5
    bar = Progress(len(batches), f"eval {split}", enabled=progress, log_every=log_every)
    for batch in batches:
        totals[4] += len(batch.skipped)
        if batch.labels.numel() == 0:
            bar.update()
            continue
        views = crops(batch.images)  # (B, V, 3, crop, crop)
        b, v = views.shape[:2]
        logits = forward_views(model, views.flatten(0, 1), b, autocast, channels_last)
        probs = average_views(logits, v)  # (B, classes)
        c1, c5 = topk_correct(probs, batch.labels)
        center = topk_correct(logits.reshape(b, v, -1)[:, CENTER_VIEW], batch.labels) if v > 1 else (c1, c5)
        nll = -probs.gather(1, batch.labels[:, None]).clamp_min(1e-12).log().sum()
        totals += torch.tensor([c1, c5, float(nll), b, 0, *center], dtype=torch.float64)
        bar.update(top1=totals[0].item() / max(totals[3].item(), 1))
    bar.close()
    if distributed.is_active():
        device = batches.device if batches.device.type == "cuda" else torch.device("cpu")
        totals = distributed.all_reduce_sum(totals.to(device)).cpu()
    model.train(was_training)
    n = max(int(totals[3]), 1)
    ten = crops.ten_crop
    return EvalResult(top1=float(totals[0]) / n, top5=float(totals[1]) / n, loss=float(totals[2]) / n,
                      images=int(totals[3]), skipped=int(totals[4]), protocol="ten-crop" if ten else "center",
                      split=split, center_top1=float(totals[5]) / n if ten else None,
                      center_top5=float(totals[6]) / n if ten else None)
