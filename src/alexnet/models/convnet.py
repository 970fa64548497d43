"""The CIFAR-10 networks of cuda-convnet, the code the paper ran, for its CIFAR-10 claims.

The paper tests two things on "a four-layer convolutional neural network" on CIFAR-10:
ReLU against tanh (Fig. 1) and response normalisation (section 3.3: 13% test error
without, 11% with). It does not say which network. cuda-convnet's ``example-layers/``
(dnouri/cuda-convnet, Krizhevsky's last commit 6627f678, svn r561, 2012-07-25) holds the
candidates, and two are built here as their layer files define them:

``cifar-18pct`` (``layers-18pct.cfg``: "18% error on CIFAR-10 in 20 minutes", no augmentation)
    conv1 32 5x5 -> max pool 3/2 -> rnorm -> conv2 32 5x5 -> avg pool 3/2 -> rnorm ->
    conv3 64 5x5 -> avg pool 3/2 -> fc10, on 32x32 images. Exactly four layers with
    weights, the only such file: the network for Fig. 1, which also used no augmentation.
    ``rnorm`` normalises within each map over 3x3 neighbourhoods (not across maps).
``cifar-11pct`` (``layers-conv-local-11pct.cfg``: 11% with translations and reflections)
    conv1 64 5x5 -> max pool 3/2 -> cmrnorm -> conv2 64 5x5 -> cmrnorm -> max pool 3/2 ->
    local3 64 3x3 -> local4 32 3x3 -> fc10, on 24x24 crops. Four hidden layers with weights
    and ``cmrnorm``, normalisation across maps (the paper's LRN); its companion
    ``layers-conv-local-13pct`` has none (and 32 maps in local3). 13% and 11% are section
    3.3's numbers: the network for the normalisation claim, with and without cmrnorm.

What cuda-convnet's code does, and these follow: pooling windows run off the image edge
(``ceil_mode``; average pools divide by the pixels inside); ``rnorm`` is
a * (1 + scale/size^2 * sum of a^2 over the window)^-pow, ``cmrnorm`` the same across
``size`` maps with scale/size, k = 1 in both; locally connected layers have a bias per
position and filter; weights are drawn from N(0, initW^2) with each layer's initW, biases 0;
inputs are 0-255 minus the training set's mean image. Every layer's activation is
``relu`` or ``tanh`` (a = b = 1 in cuda-convnet's tanh[a,b]), chosen for all at once.

Three options beyond the layer files, for the paper's other claims on these networks
(``alexnet reproduce --preset cifar``): ``overlap_pool=False`` pools 2x2 with stride 2 where
the files pool 3x3 with stride 2 (at these map sizes the same maps: 32 -> 16 -> 8 -> 4 and
24 -> 12 -> 6); ``dropout`` drops the last hidden layer's outputs before fc10, as Hinton et
al. (2012, arXiv:1207.0580) did in cuda-convnet's CIFAR-10 network (none by default: the
files have none); and ``towers=2`` (``cifar-11pct``) splits conv1 and conv2 into two towers
as the paper's two GPUs split theirs: conv2 and both normalisations see only their own
tower's maps, local3 reads both (as the paper's conv3 does). That is the connectivity under
Fig. 3, where one tower's conv1 kernels came out colour-agnostic and the other's coloured.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import Dropout
from .lrn import LocalResponseNorm
from .alexnet import ACTIVATIONS, AlexNet, VariantInfo, check_choice

CONVNET_NORMS = ("lrn", "none")  # the layer file's normalisation, or none


class WithinMapNorm(nn.Module):
    """cuda-convnet's ``rnorm``: b = a * (1 + scale/size^2 * sum of a^2 over the size x size
    window around it)^-pow, each map on its own; the window is clipped at the image edge and
    the divisor stays size^2 (a zero-padded average pool)."""

    def __init__(self, size: int = 3, scale: float = 5e-5, power: float = 0.75) -> None:
        super().__init__()
        self.size, self.scale, self.power = size, scale, power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x * (1 + self.scale * mean_sq).pow(-self.power)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, power={self.power}"


class LocallyConnected2d(nn.Module):
    """A convolution without weight sharing (cuda-convnet's ``local`` layer): each output
    position has its own filters and biases. Weight (positions, out, in * k * k), stride 1."""

    def __init__(self, in_channels: int, out_channels: int, in_size: int, kernel_size: int,
                 padding: int = 0) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.padding = (in_channels, out_channels,
                                                                               kernel_size, padding)
        self.out_size = in_size + 2 * padding - kernel_size + 1
        positions = self.out_size ** 2
        self.weight = nn.Parameter(torch.empty(positions, out_channels, in_channels * kernel_size ** 2))
        self.bias = nn.Parameter(torch.zeros(positions, out_channels))
        nn.init.normal_(self.weight, 0.0, 1 / math.sqrt(in_channels * kernel_size ** 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Patches from k*k shifted slices of the padded input (F.unfold, PyTorch's im2col, took 8 ms
        # an image on the CPU here, 100 times this; Tensor.unfold does not export to ONNX), then
        # one matrix product per position.
        b, k, side = x.shape[0], self.kernel_size, self.out_size
        padded = F.pad(x, (self.padding,) * 4)
        patches = torch.stack([padded[:, :, i:i + side, j:j + side] for i in range(k) for j in range(k)], 2)
        cols = patches.permute(0, 3, 4, 1, 2).reshape(b, side * side, -1)  # (B, positions, in*k*k)
        out = torch.einsum("bpk,pok->bpo", cols, self.weight) + self.bias       # (B, positions, out)
        return out.permute(0, 2, 1).reshape(b, self.out_channels, side, side)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, out_size={self.out_size}")


class ConvNet(AlexNet):
    """Shared by the two: ``features`` -> ``avgpool`` (the identity at the native size) -> fc10."""

    INIT_STD: dict[str, float]  # cuda-convnet's initW, by layer
    DEFAULT_INIT = "paper"  # the layer file's: these shallow networks train from it
    # The params files' epsW and wc (the convolutions' wc; DECAY_MULT scales the other layers'):
    # at the paper's 0.01 both networks diverged from their layer files' init on 0-255 inputs.
    DEFAULT_LR, DEFAULT_WEIGHT_DECAY = 0.001, 0.004
    DEFAULT_DROPOUT = 0.0  # the layer files have none
    ONE_BIAS: tuple[str, ...] = ()
    HIDDEN_FC: tuple[str, ...] = ()
    _taps: dict[str, int] = {}

    def _finish(self, layers: list, channels: int, side: int, num_classes: int, dropout: float) -> None:
        self.features = nn.Sequential(OrderedDict(layers))
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.classifier = nn.Sequential(OrderedDict([("drop", Dropout(dropout)),  # p = 0: the identity
                                                     ("fc10", nn.Linear(channels * side * side, num_classes))]))

    @staticmethod
    def _pool(kind: str, overlap: bool) -> nn.Module:
        """The layer file's 3x3 stride-2 pool (rounding up, as cuda-convnet), or 2x2 stride 2."""
        k = 3 if overlap else 2
        return nn.MaxPool2d(k, 2, ceil_mode=True) if kind == "max" else nn.AvgPool2d(k, 2, ceil_mode=True)

    @staticmethod
    def _act(activation: str) -> nn.Module:
        check_choice("activation", activation, ACTIVATIONS)
        return nn.ReLU(inplace=True) if activation == "relu" else nn.Tanh()


class ConvNet18(ConvNet):
    """``layers-18pct.cfg`` (module docstring): 89,578 parameters at 10 classes."""

    info = VariantInfo(
        name="cifar-18pct",
        input_size=32,
        min_input_size=32,
        num_params_1000=1_104_328,
        description="cuda-convnet's layers-18pct CIFAR-10 net: 32-32-64 5x5 convolutions, rnorm, fc10 (Fig. 1)",
    )
    INIT_STD = {"features.conv1": 1e-4, "features.conv2": 0.01, "features.conv3": 0.01, "classifier.fc10": 0.01}
    # layer-params-18pct.cfg: wc 0.004 for the convolutions and 1 for fc10 (multiples of --weight-decay)
    DECAY_MULT = {"classifier.fc10": 250.0}
    _pool_layer = "pool3"

    def __init__(self, num_classes: int = 10, activation: str = "relu", norm: str = "lrn",
                 init: str = "paper", overlap_pool: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        check_choice("norm", norm, CONVNET_NORMS)
        self._options = dict(activation=activation, norm=norm, overlap_pool=overlap_pool, dropout=dropout)

        def stage(i: int, cin: int, cout: int, pool: str) -> list[tuple[str, nn.Module]]:
            layers = [(f"conv{i}", nn.Conv2d(cin, cout, 5, padding=2)), (f"act{i}", self._act(activation)),
                      (f"pool{i}", self._pool(pool, overlap_pool))]
            if norm == "lrn" and i < 3:
                layers.append((f"rnorm{i}", WithinMapNorm(size=3, scale=5e-5, power=0.75)))
            return layers

        layers = [*stage(1, 3, 32, "max"),      # (B, 32, 16, 16)
                  *stage(2, 32, 32, "avg"),     # (B, 32, 8, 8)
                  *stage(3, 32, 64, "avg")]     # (B, 64, 4, 4)
        self._finish(layers, 64, 4, num_classes, dropout)
        initialise_convnet(self, init)


class ConvNet11(ConvNet):
    """``layers-conv-local-11pct.cfg`` (module docstring): 2,112,970 parameters at 10 classes."""

    info = VariantInfo(
        name="cifar-11pct",
        input_size=24,
        min_input_size=24,
        num_params_1000=3_254_440,
        description="cuda-convnet's layers-conv-local-11pct CIFAR-10 net: 64-64 5x5 convolutions, cmrnorm, "
                    "locally connected 64-32 3x3, fc10, on 24x24 crops (section 3.3)",
    )
    INIT_STD = {"features.conv1": 1e-4, "features.conv2": 0.01, "features.local3": 0.04,
                "features.local4": 0.04, "classifier.fc10": 0.01}
    # layer-params-conv-local-11pct.cfg: wc 0 for conv1/conv2, 0.004 for local3/local4, 0.01 for fc10
    DECAY_MULT = {"features.conv1": 0.0, "features.conv2": 0.0, "classifier.fc10": 2.5}
    _pool_layer = "local4"

    def __init__(self, num_classes: int = 10, activation: str = "relu", norm: str = "lrn",
                 init: str = "paper", overlap_pool: bool = True, dropout: float = 0.0, towers: int = 1) -> None:
        super().__init__()
        check_choice("norm", norm, CONVNET_NORMS)
        check_choice("towers", towers, (1, 2))
        self._options = dict(activation=activation, norm=norm, overlap_pool=overlap_pool, dropout=dropout,
                             towers=towers)
        act = self._act

        def cmrnorm(i: int) -> list[tuple[str, nn.Module]]:
            # size 9, scale 0.001 (divided by the size, as cuda-convnet does), pow 0.75, k = 1; with
            # two towers each normalises its own maps
            return ([(f"rnorm{i}", LocalResponseNorm(size=9, alpha=1e-3, beta=0.75, k=1.0, groups=towers))]
                    if norm == "lrn" else [])

        layers = [
            ("conv1", nn.Conv2d(3, 64, 5, padding=2)), ("act1", act(activation)),       # (B, 64, 24, 24)
            ("pool1", self._pool("max", overlap_pool)),                                 # (B, 64, 12, 12)
            *cmrnorm(1),
            ("conv2", nn.Conv2d(64, 64, 5, padding=2, groups=towers)), ("act2", act(activation)),  # (B, 64, 12, 12)
            *cmrnorm(2),
            ("pool2", self._pool("max", overlap_pool)),                                 # (B, 64, 6, 6)
            ("local3", LocallyConnected2d(64, 64, 6, 3, padding=1)), ("act3", act(activation)),  # crosses towers
            ("local4", LocallyConnected2d(64, 32, 6, 3, padding=1)), ("act4", act(activation)),  # (B, 32, 6, 6)
        ]
        self._finish(layers, 32, 6, num_classes, dropout)
        initialise_convnet(self, init)


CONVNET_INITS = ("paper", "kaiming", "torchvision")


def initialise_convnet(model: ConvNet, scheme: str) -> None:
    """``paper``: the layer file's initW for each layer, biases 0 (cuda-convnet's initB
    default). ``kaiming``: He-normal (fan-out) for every layer with weights but the last,
    N(0, 0.01) for fc10, biases 0. ``torchvision``: PyTorch's layer defaults."""
    check_choice("init", scheme, CONVNET_INITS)
    if scheme == "torchvision":
        return
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear, LocallyConnected2d)):
            continue
        if scheme == "paper":
            std = model.INIT_STD[name]
        elif isinstance(module, nn.Linear):
            std = 0.01
        else:  # fan-out of one output position: out channels x kernel area
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            std = math.sqrt(2.0 / (module.out_channels * k * k))
        nn.init.normal_(module.weight, 0.0, std)
        nn.init.zeros_(module.bias)
