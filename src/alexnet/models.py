"""The two AlexNet networks, written as their layer tables.

``paper``
    The 2012 network of Krizhevsky, Sutskever and Hinton: local response
    normalisation after conv1 and conv2, overlapping 3x3/2 max pooling, and the
    two towers kept explicit as ``groups=2`` in conv2, conv4 and conv5. A grouped
    weight of shape (out, in/2, kh, kw) is exactly how Caffe's ``bvlc_alexnet``
    stores the towers: output channels ``[:out/2]`` are tower 1, ``[out/2:]``
    tower 2. Layers are named as in Caffe (conv1..conv5, fc6..fc8).
    60,965,224 parameters at 1000 classes.

``torchvision``
    The single-tower "one weird trick" layout (Krizhevsky 2014) used by
    ``torchvision.models.alexnet``: same parameter names (``features.0`` ...,
    ``classifier.6``), so its state dicts load unchanged. 61,100,840 parameters.

Input sizes. ``paper`` is defined on 227x227 inputs: the paper says 224, but an
11x11 stride-4 convolution without padding gives 55x55 (as its table states)
only from 227, which is what Caffe crops. ``torchvision`` pads conv1 by 2 and is
defined on 224x224. Both end in an adaptive average pool to 6x6 before fc6; at
their native size it is the identity, and it lets both run on smaller inputs
(down to 67 px for ``paper``, 63 px for ``torchvision``), which is how the CPU
demo trains on upsampled Fashion-MNIST.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AlexNetError
from .lrn import LocalResponseNorm

__all__ = [
    "AlexNet",
    "PaperAlexNet",
    "TorchvisionAlexNet",
    "VariantInfo",
    "VARIANTS",
    "create_model",
    "variant_info",
]


@dataclass(frozen=True)
class VariantInfo:
    """What a user needs to know to feed a variant."""

    name: str
    input_size: int  # the native crop the layer table is defined on
    min_input_size: int  # smallest input for which pool5 is at least 1x1
    num_params_1000: int  # exact parameter count at 1000 classes
    description: str


class AlexNet(nn.Module):
    """Shared structure: ``features`` -> ``avgpool`` -> flatten -> ``classifier``.

    Subclasses set ``_taps``: for each readable hidden layer, the index in
    ``classifier`` whose output is that layer's activation (after its ReLU).
    """

    _taps: dict[str, int]
    info: VariantInfo

    features: nn.Sequential
    classifier: nn.Sequential

    # True when fc6 is the classifier's first layer (torchvision's drops out before it).
    _fc6_first: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, start = self._trunk(x)  # pool5 flattened (B, 9216), or for `paper` fc6's output (B, 4096)
        return self.classifier[start:](x)  # (B, num_classes) logits

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The convolutional part, and the index of the classifier layer to continue from:
        pool5 pooled and flattened with index 0, or, where fc6 is the classifier's first
        layer (``paper``), fc6's output (before its ReLU) with index 1, computed by
        ``fc6_on_pool5`` (exact, and cheaper when pool5 is 1x1)."""
        x = self.features(x)  # (B, 256, 6, 6) at the native input size
        if self._fc6_first:
            return fc6_on_pool5(self.classifier[0], self.avgpool, x), 1
        return torch.flatten(self.avgpool(x), 1), 0

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    def options(self) -> dict:
        """The keyword arguments that rebuild this network with ``create_model`` (with
        ``num_classes``): what weights files record, and the two-tower split copies."""
        return dict(self._options)

    @property
    def feature_layers(self) -> tuple[str, ...]:
        return ("pool5", *self._taps)

    def forward_features(self, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """Activations of a hidden layer: ``pool5`` (9216-d, flattened), ``fc6`` or
        ``fc7`` (4096-d, after ReLU). In ``eval()`` mode dropout is off, so these
        are the vectors the paper compares in its Fig. 4 (``fc7``)."""
        if layer not in self.feature_layers:
            raise AlexNetError(f"unknown layer {layer!r}; choose one of {', '.join(self.feature_layers)}")
        if layer == "pool5":
            return torch.flatten(self.avgpool(self.features(x)), 1)
        x, start = self._trunk(x)
        return self.classifier[start:self._taps[layer] + 1](x)

    def head_parameters(self):
        """The last layer's (fc8's) parameters: what ``--head-lr-mult`` and
        ``--freeze all-but-fc8`` single out."""
        return list(self.classifier[-1].parameters())

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer (fc8) for a new class count, freshly initialised."""
        old = self.classifier[-1]
        new = nn.Linear(old.in_features, num_classes)
        nn.init.normal_(new.weight, 0.0, 0.01)
        nn.init.zeros_(new.bias)
        self.classifier[-1] = new.to(old.weight.device, old.weight.dtype)


def fc6_on_pool5(fc6: nn.Linear, avgpool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """fc6 of pool5 ``x`` (B, C, h, w), through the 6x6 adaptive pool.

    Inputs below 99 px leave pool5 at 1x1; the adaptive pool would copy each value to
    all 36 positions. fc6 of those copies is fc6 with its 36 per-position weight columns
    summed: the same numbers (and gradients) for 1/36 of fc6's work, which is a third
    of a small-input step.
    """
    if x.shape[-2:] == (1, 1):
        weight = fc6.weight.view(fc6.out_features, -1, 36).sum(-1)  # (out, C)
        return F.linear(torch.flatten(x, 1), weight, fc6.bias)
    return fc6(torch.flatten(avgpool(x), 1))


LRN_SPANS = ("all", "tower")  # the paper network's LRN window: across all maps, or within each tower


class PaperAlexNet(AlexNet):
    """The 2012 network (PAPER.md, "paper"), shapes for a 227x227 input."""

    info = VariantInfo(
        name="paper",
        input_size=227,
        min_input_size=67,
        num_params_1000=60_965_224,
        description="2012 two-tower network: LRN, overlapping pooling, groups=2 in conv2/4/5",
    )
    _taps = {"fc6": 1, "fc7": 4}  # classifier.relu6, classifier.relu7
    _fc6_first = True

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, lrn: bool = True,
                 init: str = "paper", lrn_k: float = 2.0, lrn_span: str = "all") -> None:
        super().__init__()
        if lrn_span not in LRN_SPANS:
            raise AlexNetError(f"lrn_span must be one of {', '.join(LRN_SPANS)}, got {lrn_span!r}")
        self._options = dict(dropout=dropout, lrn=lrn, lrn_k=lrn_k, lrn_span=lrn_span)

        def norm() -> nn.Module:
            # n=5, k=2, alpha=1e-4, beta=0.75; alpha is divided by n, as in the code
            # the paper ran (cuda-convnet) and in Caffe (PAPER.md, "LRN"). Caffe's
            # bvlc_alexnet uses k=1: imported Caffe weights set lrn_k=1. The window runs
            # over all maps, as in Caffe ("all"), or within each tower ("tower"), as on
            # the two GPUs of cuda-convnet, where each GPU normalised its own 48/128 maps.
            groups = 2 if lrn_span == "tower" else 1
            return LocalResponseNorm(k=lrn_k, groups=groups) if lrn else nn.Identity()

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),            # (B, 96, 55, 55)
            ("relu1", nn.ReLU(inplace=True)),
            ("norm1", norm()),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),                 # (B, 96, 27, 27)
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),  # (B, 256, 27, 27)
            ("relu2", nn.ReLU(inplace=True)),
            ("norm2", norm()),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),                 # (B, 256, 13, 13)
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),         # crosses towers
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),  # (B, 256, 13, 13)
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),                 # (B, 256, 6, 6)
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # identity at 227; allows smaller inputs
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),  # the paper drops after fc6 and fc7
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        initialise(self, init)

    # The layers with weights, by module path: the names Caffe's bvlc_alexnet uses, and the
    # unit of the two-tower split (towers.py).
    LAYERS = ("features.conv1", "features.conv2", "features.conv3", "features.conv4", "features.conv5",
              "classifier.fc6", "classifier.fc7", "classifier.fc8")
    # Names of the layers whose bias the paper sets to 1 (section 5), and the hidden
    # fully connected layers (Caffe draws their weights with std 0.005).
    ONE_BIAS = ("features.conv2", "features.conv4", "features.conv5", "classifier.fc6", "classifier.fc7")
    HIDDEN_FC = ("classifier.fc6", "classifier.fc7")


class TorchvisionAlexNet(AlexNet):
    """torchvision's ``alexnet`` layout, shapes for a 224x224 input."""

    info = VariantInfo(
        name="torchvision",
        input_size=224,
        min_input_size=63,
        num_params_1000=61_100_840,
        description="single-tower 64-192-384-256-256 layout of torchvision.models.alexnet",
    )
    _taps = {"fc6": 2, "fc7": 5}  # classifier.2 and classifier.5 are the ReLUs

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, init: str = "torchvision") -> None:
        super().__init__()
        self._options = dict(dropout=dropout)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0: (B, 64, 55, 55)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                  # (B, 64, 27, 27)
            nn.Conv2d(64, 192, kernel_size=5, padding=2),           # 3: (B, 192, 27, 27)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                  # (B, 192, 13, 13)
            nn.Conv2d(192, 384, kernel_size=3, padding=1),          # 6
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),          # 8
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),          # 10: (B, 256, 13, 13)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),                  # (B, 256, 6, 6)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),  # "one weird trick" drops *before* fc6 and fc7
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        initialise(self, init)

    ONE_BIAS: tuple[str, ...] = ()
    HIDDEN_FC = ("classifier.1", "classifier.4")


INITS = ("paper", "caffe", "kaiming", "torchvision")


def initialise(model: AlexNet, scheme: str) -> None:
    """Initialise weights in place.

    ``paper``: weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7 and
    0 elsewhere (section 5). ``caffe``: Caffe's bvlc_alexnet (train_val.prototxt):
    those biases at 0.1, which Caffe chose because 1 can stall the start of training,
    and fc6/fc7 weights N(0, 0.005^2). ``kaiming``: He-normal
    (fan-out) for convolutions, N(0, 0.01^2) for linear layers, zero biases; it
    starts learning at once, which short runs need. ``torchvision``: PyTorch's
    default layer initialisation, as ``torchvision.models.alexnet`` does.
    """
    if scheme not in INITS:
        raise AlexNetError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme == "torchvision":
        return  # nn.Conv2d / nn.Linear already initialised themselves
    one_bias = {"paper": 1.0, "caffe": 0.1}.get(scheme, 0.0)
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "kaiming" and isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        else:
            std = 0.005 if scheme == "caffe" and name in model.HIDDEN_FC else 0.01
            nn.init.normal_(module.weight, 0.0, std)
        nn.init.constant_(module.bias, one_bias if name in model.ONE_BIAS else 0.0)


VARIANTS: dict[str, Callable[..., AlexNet]] = {
    "paper": PaperAlexNet,
    "torchvision": TorchvisionAlexNet,
}


def variant_info(name: str) -> VariantInfo:
    return _lookup(name).info


def _lookup(name: str) -> Callable[..., AlexNet]:
    try:
        return VARIANTS[name]
    except KeyError:
        raise AlexNetError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def create_model(variant: str = "paper", num_classes: int = 1000, **kwargs) -> AlexNet:
    """Build a network by name, e.g. ``create_model("paper", num_classes=10)``.

    Keyword arguments go to the variant: ``dropout`` and ``init`` for both;
    ``lrn`` (bool), ``lrn_k`` and ``lrn_span`` ('all' or 'tower') for ``paper``.
    """
    if num_classes < 1:
        raise AlexNetError(f"num_classes must be at least 1, got {num_classes}")
    cls = _lookup(variant)
    try:
        return cls(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise AlexNetError(f"variant {variant!r}: {e}") from None
