"""The networks by name: ``create_model("paper")``, as timm's registry does, and each
network's own defaults (initialisation, dropout, input normalisation)."""

from __future__ import annotations

from typing import Callable

from ..errors import AlexNetError
from .alexnet import AlexNet, HalfAlexNet, PaperAlexNet, TorchvisionAlexNet, VariantInfo
from .convnet import ConvNet11, ConvNet18
from .lenet import LeNet5

__all__ = ["VARIANTS", "create_model", "default_dropout", "default_init", "default_normalize", "variant_info"]


VARIANTS: dict[str, Callable[..., AlexNet]] = {
    "paper": PaperAlexNet,
    "torchvision": TorchvisionAlexNet,
    "paper-half": HalfAlexNet,
    "lenet5": LeNet5,
    "cifar-18pct": ConvNet18,
    "cifar-11pct": ConvNet11,
}


def default_init(variant: str) -> str:
    """The initialisation ``--init auto`` gives a network (its class's ``DEFAULT_INIT``)."""
    return _lookup(variant).DEFAULT_INIT


def default_dropout(variant: str) -> float:
    """The dropout probability ``--dropout -1`` gives a network (``DEFAULT_DROPOUT``)."""
    return _lookup(variant).DEFAULT_DROPOUT


def default_normalize(variant: str) -> str:
    """The input normalisation ``--normalize auto`` gives a network (``DEFAULT_NORMALIZE``)."""
    return _lookup(variant).DEFAULT_NORMALIZE


def variant_info(name: str) -> VariantInfo:
    return _lookup(name).info


def _lookup(name: str) -> Callable[..., AlexNet]:
    try:
        return VARIANTS[name]
    except KeyError:
        raise AlexNetError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def create_model(variant: str = "paper", num_classes: int = 1000, **kwargs) -> AlexNet:
    """Build a network by name, e.g. ``create_model("paper", num_classes=10)``.

    Keyword arguments go to the variant: ``init`` for all; ``dropout`` for the AlexNets;
    ``norm`` ('lrn', 'batch', 'none'), ``lrn_k``, ``lrn_span`` ('all' or 'tower'),
    ``activation`` ('relu', 'tanh') and ``overlap_pool`` for ``paper`` and ``paper-half``,
    e.g. ``create_model("paper", activation="tanh")``; ``in_channels`` for ``lenet5``.
    """
    if num_classes < 1:
        raise AlexNetError(f"num_classes must be at least 1, got {num_classes}")
    cls = _lookup(variant)
    if kwargs.get("init") == "auto":
        kwargs["init"] = cls.DEFAULT_INIT
    try:
        return cls(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise AlexNetError(f"variant {variant!r}: {e}") from None
