"""torch.hub entry points: ``torch.hub.load(REPO_OR_DIR, "alexnet_paper", weights=FILE)``.

Each builds one of the package's networks, untrained, or, with ``weights=`` naming a file
or run directory from ``alexnet train`` / ``alexnet import-weights``, trained and in eval
mode, with ``model.preprocess`` (uint8 images (B, 3, S, S) at ``meta["resize"]``, e.g. from
``alexnet.data.folder.load_image``, to the normalised center crops the network takes:
the preprocessing its weights were trained with) and ``model.meta`` (variant, classes,
input size, measured accuracy). ``weights=`` is a local file you give, or published weights
by name (``alexnet_torchvision(weights="IMAGENET1K_V1")``: torchvision's file, from the torch
hub cache or downloaded once, its hash checked). Keyword arguments go to ``create_model`` (e.g.
``num_classes=10``, ``norm="batch"``); with ``weights=`` they must agree with the file.
"""

import os
import sys

dependencies = ["torch", "torchvision", "safetensors", "numpy", "PIL"]

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))  # this checkout's package


def _build(variant: str, weights=None, **kwargs):
    from alexnet import create_model, load_model
    from alexnet.data.transforms import EvalCrops

    if weights is None:
        return create_model(variant, **kwargs)
    model, normalizer, meta = load_model(weights, variant=variant, num_classes=kwargs.pop("num_classes", None))
    if kwargs:
        raise TypeError(f"with weights=, the network is the file's; unexpected arguments: {', '.join(kwargs)}")
    crops = EvalCrops(normalizer, meta["input_size"], ten_crop=False)
    model.preprocess, model.meta = (lambda images: crops(images)[:, 0]), meta
    return model


def alexnet_paper(weights=None, **kwargs):
    """The 2012 network as the paper ran it: two towers, LRN, overlapping pooling (60,965,224
    parameters at 1000 classes). Options: ``norm``, ``activation``, ``overlap_pool``, ``init``, ..."""
    return _build("paper", weights, **kwargs)


def alexnet_torchvision(weights=None, **kwargs):
    """torchvision's single-tower layout (64-192-384-256-256, no LRN): its weights load into it."""
    return _build("torchvision", weights, **kwargs)


def alexnet_paper_half(weights=None, **kwargs):
    """One tower with half the kernels of conv1-conv4 (section 3.2's comparison network)."""
    return _build("paper-half", weights, **kwargs)


def alexnet_bn(weights=None, **kwargs):
    """The paper network with batch normalisation after every convolution in place of LRN."""
    if weights is None:
        kwargs.setdefault("norm", "batch")
    return _build("paper", weights, **kwargs)


def lenet5(weights=None, **kwargs):
    """LeNet-5 (LeCun et al. 1998): 32 px input, 6-16-120-84 units."""
    return _build("lenet5", weights, **kwargs)
