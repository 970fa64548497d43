"""LeNet-5 (LeCun et al. 1998), AlexNet's predecessor, in the same frame so that the two can be
trained and compared by the same commands."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .alexnet import AlexNet, VariantInfo, initialise


class ScaledTanh(nn.Module):
    """LeNet-5's squashing function, f(a) = 1.7159 tanh(2a/3) (LeCun et al. 1998, appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class LeNet5(AlexNet):
    """LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), AlexNet's predecessor, on 32x32 inputs:
    C1 6 maps 5x5, S2 2x2 subsampling, C3 16 maps 5x5, S4, C5 120 units, F6 84, output.

    As in common use since, and as the 61,706 parameters (10 classes, one input channel)
    count it: C3 connects every S2 map (the paper's table omits some), S2/S4 are plain 2x2
    average pools (the paper's have a trainable gain and bias each), and the output is a
    linear layer under softmax (the paper's Euclidean RBF units). ``in_channels`` defaults
    to 3, the pipeline's RGB (grayscale data arrives as three equal channels).
    """

    info = VariantInfo(
        name="lenet5",
        input_size=32,
        min_input_size=32,
        num_params_1000=146_156,
        description="LeNet-5 (1998): 6-16-120-84 units, 5x5 convolutions, 2x2 subsampling, scaled tanh",
    )
    _taps = {"c5": 1, "f6": 3}  # classifier.act5, classifier.act6
    _pool_layer = "s4"
    # LeCun et al. normalised inputs to about unit variance; 0-255 inputs saturate the tanh units.
    DEFAULT_NORMALIZE = "channel"
    # PyTorch's layer defaults, U(+-1/sqrt(fan-in)): the fan-in scaling of LeCun's "Efficient
    # BackProp". He's init (made for ReLUs) left it at chance after 2 epochs of 1,024 Fashion-MNIST
    # images (loss 2.30), this one reached 48% (2026-11-26, 2-core CPU).
    DEFAULT_INIT = "torchvision"
    DEFAULT_DROPOUT = 0.0  # it has none
    PAPER_WEIGHTS = "lecun-uniform"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, init: str = "paper") -> None:
        super().__init__()
        self._options = dict(in_channels=in_channels)
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(in_channels, 6, kernel_size=5)),     # (B, 6, 28, 28)
            ("act1", ScaledTanh()),
            ("s2", nn.AvgPool2d(2, 2)),                           # (B, 6, 14, 14)
            ("c3", nn.Conv2d(6, 16, kernel_size=5)),              # (B, 16, 10, 10)
            ("act3", ScaledTanh()),
            ("s4", nn.AvgPool2d(2, 2)),                           # (B, 16, 5, 5)
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((5, 5))  # identity at 32
        self.classifier = nn.Sequential(OrderedDict([
            ("c5", nn.Linear(16 * 5 * 5, 120)),  # the paper's C5 is a 5x5 convolution over 5x5 maps: the same
            ("act5", ScaledTanh()),
            ("f6", nn.Linear(120, 84)),
            ("act6", ScaledTanh()),
            ("output", nn.Linear(84, num_classes)),
        ]))
        initialise(self, init)

    ONE_BIAS: tuple[str, ...] = ()
    HIDDEN_FC: tuple[str, ...] = ()
