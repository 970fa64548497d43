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

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AlexNetError
from .dropout import Dropout
from .lrn import LocalResponseNorm

__all__ = ["AlexNet", "HalfAlexNet", "PaperAlexNet", "TorchvisionAlexNet", "VariantInfo", "initialise", "plain_fc6", "pool5_size"]


@dataclass(frozen=True)
class VariantInfo:
    """What a user needs to know to feed a variant."""

    name: str
    input_size: int  # the native crop the layer table is defined on
    min_input_size: int  # smallest input for which pool5 is at least 1x1
    num_params_1000: int  # exact parameter count at 1000 classes
    description: str


@contextlib.contextmanager
def plain_fc6(model: nn.Module):
    """``model`` computing fc6 the ordinary way for the duration (forward hooks on fc6 and
    gradients through it see the plain layer, not ``fc6_on_pool5``'s folded form); put back as
    it was, on errors too."""
    own = model.__dict__.get("_fc6_first", _UNSET)  # an instance value to put back, or none
    model._fc6_first = False
    try:
        yield model
    finally:
        if own is _UNSET:
            del model._fc6_first
        else:
            model._fc6_first = own


_UNSET = object()


class AlexNet(nn.Module):
    """Shared structure: ``features`` -> ``avgpool`` -> flatten -> ``classifier``.

    Subclasses set ``_taps``: for each readable hidden layer, the index in
    ``classifier`` whose output is that layer's activation (after its ReLU).
    """

    _taps: dict[str, int]
    info: VariantInfo
    # What --init auto gives: He's init (see ModelConfig.init for why not the paper's).
    DEFAULT_INIT = "kaiming"
    # What --normalize auto gives: the paper's 0-255 scale minus the mean image, for which LRN's
    # constants were chosen; networks without LRN take torchvision's unit scale instead.
    DEFAULT_NORMALIZE = "mean-image"
    # What --lr 0 and --weight-decay -1 give: the paper's (section 5).
    DEFAULT_LR, DEFAULT_WEIGHT_DECAY = 0.01, 5e-4
    # What --dropout -1 gives: the paper's 0.5 in fc6 and fc7 (section 4.2).
    DEFAULT_DROPOUT = 0.5
    # Weight-decay multipliers by layer (module path), for layer files that set each layer's own.
    DECAY_MULT: dict[str, float] = {}
    # What ``init="paper"`` draws weights from: N(0, 0.01^2) (section 5), or LeNet-5's own
    # uniform +-2.4/fan-in ("lecun-uniform").
    PAPER_WEIGHTS = "normal"

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

    _pool_layer = "pool5"  # the last convolutional stage, which forward_features returns flattened

    @property
    def feature_layers(self) -> tuple[str, ...]:
        return (self._pool_layer, *self._taps)

    def forward_features(self, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """Activations of a hidden layer: ``pool5`` (9216-d, flattened), ``fc6`` or
        ``fc7`` (4096-d, after ReLU). In ``eval()`` mode dropout is off, so these
        are the vectors the paper compares in its Fig. 4 (``fc7``)."""
        if layer not in self.feature_layers:
            raise AlexNetError(f"unknown layer {layer!r}; choose one of {', '.join(self.feature_layers)}")
        if layer == self._pool_layer:
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


def fc6_on_pool5(fc6: nn.Linear, avgpool: nn.AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    """fc6 of pool5 ``x`` (B, C, h, w), through the adaptive pool to fc6's g x g grid.

    Where pool5 is 1x1 (inputs below 99 px at the paper's 6x6 grid) the adaptive pool would
    copy each value to all g*g positions. fc6 of those copies is fc6 with its g*g per-position
    weight columns summed: the same numbers (and gradients) for 1/(g*g) of fc6's work, which is
    a third of a small-input step at g = 6. (The copies also make fc6 learn g*g times as fast as
    a layer that sees each value once: ``pool5_grid`` sized to the input avoids them.)
    """
    grid = _pair(avgpool.output_size)
    if x.shape[-2:] == (1, 1) and grid != (1, 1):
        weight = fc6.weight.view(fc6.out_features, -1, grid[0] * grid[1]).sum(-1)  # (out, C)
        return F.linear(torch.flatten(x, 1), weight, fc6.bias)
    return fc6(torch.flatten(avgpool(x), 1))


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def pool5_size(variant: str, input_size: int, overlap_pool: bool = True, ceil_pool: bool = False) -> int:
    """The side of pool5's map for a square input of ``input_size`` px (0 where it vanishes): what
    ``pool5_grid`` should be for fc6 to see each pool5 value once. The arithmetic of the paper
    networks and torchvision's (conv1 11/4, unpadded or padded by 2; three 3/2 or 2/2 pools;
    size-keeping convolutions between them)."""
    if variant not in ("paper", "paper-half", "torchvision"):
        raise AlexNetError(f"pool5_size is defined for the paper and torchvision networks, not {variant!r}")
    if variant == "torchvision" and not (overlap_pool and not ceil_pool):
        raise AlexNetError("the torchvision network's pools are 3x3/2 with floor rounding; it has no pooling options")
    k, s = (3, 2) if overlap_pool else (2, 2)
    n = (input_size + (4 if variant == "torchvision" else 0) - 11) // 4 + 1  # conv1
    for _ in range(3):  # pool1, pool2, pool5 (conv2-conv5 keep the size)
        if n < (k - s + 1 if ceil_pool else k):  # ceil rounding keeps a last, partial window
            return 0
        n = (-(-(n - k) // s) if ceil_pool else (n - k) // s) + 1
    return n


LRN_SPANS = ("all", "tower")  # the paper network's LRN window: across all maps, or within each tower
NORMS = ("lrn", "batch", "none")  # after the convolutions: the paper's LRN, batch norm (2015), nothing
ACTIVATIONS = ("relu", "tanh")  # section 3.1 compares the two (Fig. 1)


class PaperAlexNet(AlexNet):
    """The 2012 network (the paper's Fig. 2 and section 3), shapes for a 227x227 input.

    The options change one thing each, for the paper's own comparisons (``alexnet
    reproduce``): ``activation="tanh"`` (section 3.1), ``overlap_pool=False``: 2x2
    stride-2 pooling, which with floor rounding gives the same maps as 3x3 stride 2 at 227 px (section 3.4),
    ``norm="none"`` (LRN off, section 3.3; ``lrn=False`` says the same) and
    ``norm="batch"``: batch normalisation after every convolution, before its
    activation, in place of LRN (Ioffe and Szegedy 2015; the convolutions then have no
    bias, which the normalisation would cancel).

    Two options serve inputs other than 227 px. ``pool5_grid``: the grid the adaptive pool
    brings pool5 to before fc6 (6, the paper's 6x6). At 67-98 px pool5 is 1x1 and a 6x6 grid
    holds 36 copies of it, so fc6 learns 36 times as fast as at 227 px; ``pool5_grid`` set to
    pool5's own size (``pool5_size``) gives fc6 each value once. ``ceil_pool``: the max pools
    round their output size up, as Caffe's pooling layer does (the same maps at 227 px, whose
    pooled maps are odd). At inputs whose maps are all even (71, 135, 199 px) the overlapping
    3x3/2 pools and the 2x2/2 ones then give the same sizes and both cover every unit, so
    ``overlap_pool=False`` changes the overlap alone; with floor rounding (the default, as
    torchvision) a 2x2/2 pool drops the odd last row and column of the maps the 3x3/2 one
    reads in full (4%, 7% and 15% of the conv1, conv2 and conv5 maps at 227 px).
    """

    info = VariantInfo(
        name="paper",
        input_size=227,
        min_input_size=67,
        num_params_1000=60_965_224,
        description="2012 two-tower network: LRN, overlapping pooling, groups=2 in conv2/4/5",
    )
    _taps = {"fc6": 1, "fc7": 4}  # classifier.relu6, classifier.relu7
    _fc6_first = True
    # Kernels of conv1..conv5, and the groups of conv2, conv4, conv5: the two towers.
    WIDTHS = (96, 256, 384, 384, 256)
    GROUPS = 2

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, lrn: bool = True,
                 init: str = "paper", lrn_k: float = 2.0, lrn_span: str = "all", norm: str | None = None,
                 activation: str = "relu", overlap_pool: bool = True, pool5_grid: int = 6,
                 ceil_pool: bool = False) -> None:
        super().__init__()
        norm = norm or ("lrn" if lrn else "none")
        check_choice("lrn_span", lrn_span, LRN_SPANS)
        check_choice("norm", norm, NORMS)
        check_choice("activation", activation, ACTIVATIONS)
        _check_grid(pool5_grid)
        self._options = dict(dropout=dropout, norm=norm, lrn_k=lrn_k, lrn_span=lrn_span, activation=activation,
                             overlap_pool=overlap_pool, pool5_grid=pool5_grid, ceil_pool=ceil_pool)
        c1, c2, c3, c4, c5 = self.WIDTHS
        g = self.GROUPS

        def act() -> nn.Module:
            return nn.ReLU(inplace=True) if activation == "relu" else nn.Tanh()
        pool = (3, 2) if overlap_pool else (2, 2)  # (kernel, stride): 55 -> 27 -> 13 -> 6 either way (floor)
        g5 = pool5_grid

        def maxpool() -> nn.MaxPool2d:
            return nn.MaxPool2d(*pool, ceil_mode=ceil_pool)

        def conv(i: int, cin: int, cout: int, k: int, groups: int = 1, **kw) -> list[tuple[str, nn.Module]]:
            layers = [(f"conv{i}", nn.Conv2d(cin, cout, k, groups=groups, bias=norm != "batch", **kw))]
            if norm == "batch":
                layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
            return layers + [(f"{activation}{i}", act())]

        def lrn_(i: int) -> list[tuple[str, nn.Module]]:
            # n=5, k=2, alpha=1e-4, beta=0.75; alpha is divided by n, as in the code
            # the paper ran (cuda-convnet) and in Caffe (section 3.3's formula). Caffe's
            # bvlc_alexnet uses k=1: imported Caffe weights set lrn_k=1. The window runs
            # over all maps, as in Caffe ("all"), or within each tower ("tower"), as on
            # the two GPUs of cuda-convnet, where each GPU normalised its own 48/128 maps.
            if norm != "lrn":
                return []
            return [(f"norm{i}", LocalResponseNorm(k=lrn_k, groups=g if lrn_span == "tower" else 1))]

        self.features = nn.Sequential(OrderedDict([
            *conv(1, 3, c1, 11, stride=4),                              # (B, 96, 55, 55)
            *lrn_(1),
            ("pool1", maxpool()),                                       # (B, 96, 27, 27)
            *conv(2, c1, c2, 5, groups=g, padding=2),                   # (B, 256, 27, 27)
            *lrn_(2),
            ("pool2", maxpool()),                                       # (B, 256, 13, 13)
            *conv(3, c2, c3, 3, padding=1),                             # crosses towers
            *conv(4, c3, c4, 3, groups=g, padding=1),
            *conv(5, c4, c5, 3, groups=g, padding=1),                   # (B, 256, 13, 13)
            ("pool5", maxpool()),                                       # (B, 256, 6, 6)
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((g5, g5))  # identity at 227 (g5 = 6); allows other inputs
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(c5 * g5 * g5, 4096)),
            (f"{activation}6", act()),
            ("drop6", Dropout(dropout)),  # the paper drops after fc6 and fc7
            ("fc7", nn.Linear(4096, 4096)),
            (f"{activation}7", act()),
            ("drop7", Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        initialise(self, init)

    def is_standard(self) -> bool:
        return standard_structure(self._options)

    # The layers with weights, by module path: the names Caffe's bvlc_alexnet uses, and the
    # unit of the two-tower split (towers.py).
    LAYERS = ("features.conv1", "features.conv2", "features.conv3", "features.conv4", "features.conv5",
              "classifier.fc6", "classifier.fc7", "classifier.fc8")
    # Names of the layers whose bias the paper sets to 1 (section 5), and the hidden
    # fully connected layers (Caffe draws their weights with std 0.005).
    ONE_BIAS = ("features.conv2", "features.conv4", "features.conv5", "classifier.fc6", "classifier.fc7")
    HIDDEN_FC = ("classifier.fc6", "classifier.fc7")


class HalfAlexNet(PaperAlexNet):
    """The single-tower network the paper compares the two towers with (section 3.2): half
    the kernels in conv1-conv4 (48-128-192-192), no groups, and the full conv5 (256) and
    fully connected layers, "so that the two nets have approximately the same number of
    parameters" (the paper's footnote). Everything else, options included, as ``paper``."""

    info = VariantInfo(
        name="paper-half",
        input_size=227,
        min_input_size=67,
        num_params_1000=59_798_312,
        description="one tower with half of conv1-conv4's kernels (48-128-192-192-256): section 3.2's baseline",
    )
    WIDTHS = (48, 128, 192, 192, 256)
    GROUPS = 1

    def is_standard(self) -> bool:
        return False  # it has no towers to split


def standard_structure(options: dict[str, Any]) -> bool:
    """Whether a paper network's options (``options()``, or a config's model fields) are the 2012
    structure: ReLU, overlapping floor-rounded pooling, LRN or none, fc6 on any grid. That is what
    the two-tower split builds."""
    o = options
    return o["activation"] == "relu" and o["overlap_pool"] and o["norm"] != "batch" and not o["ceil_pool"]


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AlexNetError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_grid(pool5_grid: int) -> None:
    if pool5_grid < 1:
        raise AlexNetError(f"pool5_grid must be at least 1, got {pool5_grid}")


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
    # torchvision's own pipeline: per-channel mean/std. On the 0-255 scale He's init (which assumes
    # unit-scale inputs) made its logits 73 times too large, and the default recipe diverged.
    DEFAULT_NORMALIZE = "channel"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, init: str = "torchvision",
                 pool5_grid: int = 6) -> None:
        super().__init__()
        _check_grid(pool5_grid)
        self._options = dict(dropout=dropout, pool5_grid=pool5_grid)  # pool5_grid as the paper network's
        g5 = pool5_grid
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
        self.avgpool = nn.AdaptiveAvgPool2d((g5, g5))
        self.classifier = nn.Sequential(
            Dropout(dropout),  # "one weird trick" drops *before* fc6 and fc7
            nn.Linear(256 * g5 * g5, 4096),
            nn.ReLU(inplace=True),
            Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        initialise(self, init)

    ONE_BIAS: tuple[str, ...] = ()
    HIDDEN_FC = ("classifier.1", "classifier.4")


INITS = ("paper", "zero-bias", "caffe", "kaiming", "torchvision")


def initialise(model: AlexNet, scheme: str) -> None:
    """Initialise weights in place.

    ``paper``: weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7 and
    0 elsewhere (section 5). ``zero-bias``: the same weights, every bias 0 (what
    section 5's ones are compared with). ``caffe``: Caffe's bvlc_alexnet
    (train_val.prototxt): those biases at 0.1, which Caffe chose because 1 can stall
    the start of training, and fc6/fc7 weights N(0, 0.005^2). ``kaiming``: He-normal
    (fan-out) for convolutions, N(0, 0.01^2) for linear layers, zero biases; it
    starts learning at once, which short runs need. ``torchvision``: PyTorch's
    default layer initialisation, as ``torchvision.models.alexnet`` does.
    LeNet-5's ``paper`` is its own paper's: weights uniform in +-2.4/fan-in (LeCun et
    al. 1998, appendix C), biases 0.
    """
    if scheme not in INITS:
        raise AlexNetError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme == "torchvision":
        return  # nn.Conv2d / nn.Linear already initialised themselves
    one_bias = {"paper": 1.0, "caffe": 0.1}.get(scheme, 0.0)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if model.PAPER_WEIGHTS == "lecun-uniform" and scheme == "paper":
            bound = 2.4 / module.weight[0].numel()
            nn.init.uniform_(module.weight, -bound, bound)
        elif scheme == "kaiming" and isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        else:
            std = 0.005 if scheme == "caffe" and name in model.HIDDEN_FC else 0.01
            nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.constant_(module.bias, one_bias if name in model.ONE_BIAS else 0.0)
