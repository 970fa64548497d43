"""Data: sources (Fashion-MNIST, class-per-folder trees), the loader, and batched transforms."""

from .loader import Batch, Batches, Splits, build, estimate_mean_image
from .transforms import EvalCrops, Normalizer, TrainAugment

__all__ = ["Batch", "Batches", "EvalCrops", "Normalizer", "Splits", "TrainAugment", "build", "estimate_mean_image"]
