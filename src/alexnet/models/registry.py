"""The networks by name: ``create_model("paper")``, as timm's registry does, and each
network's own defaults (initialisation, dropout, input normalisation)."""

from __future__ import annotations

from typing import Callable

from ..errors import AlexNetError
from .alexnet import AlexNet, HalfAlexNet, PaperAlexNet, TorchvisionAlexNet, VariantInfo
from .convnet import ConvNet11, ConvNet18
from . import pretrained
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


def create_model(variant: str = "paper", num_classes: int = 1000, weights=None, **kwargs) -> AlexNet:
    """Build a network by name, e.g. ``create_model("paper", num_classes=10)``.

    Keyword arguments go to the variant: ``init`` for all; ``dropout`` for the AlexNets;
    ``norm`` ('lrn', 'batch', 'none'), ``lrn_k``, ``lrn_span`` ('all' or 'tower'),
    ``activation`` ('relu', 'tanh') and ``overlap_pool`` for ``paper`` and ``paper-half``,
    e.g. ``create_model("paper", activation="tanh")``; ``in_channels`` for ``lenet5``.

    ``weights``: published weights by name, as torchvision takes them, e.g.
    ``create_model("torchvision", weights="IMAGENET1K_V1")`` (see ``models.pretrained``).
    """
    if num_classes < 1:
        raise AlexNetError(f"num_classes must be at least 1, got {num_classes}")
    cls = _lookup(variant)
    if kwargs.get("init") == "auto":
        kwargs["init"] = cls.DEFAULT_INIT
    published = _published(variant, num_classes, weights)
    try:
        model = cls(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise AlexNetError(f"variant {variant!r}: {e}") from None
    if published is not None:
        model.load_state_dict(pretrained.state_dict(published))
    return model


def _published(variant: str, num_classes: int, weights) -> pretrained.Published | None:
    if weights is None:
        return None
    entry = pretrained.require(weights)
    if entry.variant != variant:
        raise AlexNetError(f"{entry.name} are weights for the {entry.variant!r} network, not {variant!r}")
    if num_classes != entry.num_classes:
        raise AlexNetError(f"{entry.name} has {entry.num_classes} classes, not {num_classes}: load it as it is, "
                           "then model.reset_classifier(n) (or alexnet finetune)")
    return entry
