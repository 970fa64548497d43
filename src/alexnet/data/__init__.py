"""Data: sources (Fashion-MNIST, class-per-folder trees, packed datasets), the loader, and batched transforms."""

from .loader import Batch, Batches, Request, Splits, build
from .transforms import EvalCrops, Normalizer, TrainAugment

__all__ = ["Batch", "Batches", "EvalCrops", "Normalizer", "Request", "Splits", "TrainAugment", "build"]
