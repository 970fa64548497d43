"""The networks: AlexNet as the paper drew it (two towers) and as torchvision lays it out,
LeNet-5 and the paper's CIFAR-10 networks, local response normalisation, and the registry
that builds them by name."""

from .alexnet import AlexNet, HalfAlexNet, PaperAlexNet, TorchvisionAlexNet, VariantInfo, pool5_size
from .lenet import LeNet5
from .lrn import LocalResponseNorm
from .registry import VARIANTS, create_model, variant_info
from .towers import TwoTowerAlexNet

__all__ = ["AlexNet", "HalfAlexNet", "LeNet5", "LocalResponseNorm", "PaperAlexNet", "TorchvisionAlexNet",
           "TwoTowerAlexNet", "VARIANTS", "VariantInfo", "create_model", "pool5_size", "variant_info"]
