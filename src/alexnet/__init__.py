"""AlexNet (Krizhevsky, Sutskever, Hinton 2012): the paper's network and recipe, done right and fast."""

from .caffe import import_caffe
from .checkpoint import load_model
from .config import TrainConfig
from .data.packed import prepare
from .errors import AlexNetError
from .export import export, import_torchvision
from .infer import evaluate_weights, extract_features, neighbors, predict
from .models import VARIANTS, AlexNet, create_model, variant_info
from .towers import TwoTowerAlexNet
from .train import fit

__version__ = "0.1.0"

__all__ = ["AlexNet", "AlexNetError", "TrainConfig", "VARIANTS", "create_model", "evaluate_weights", "export",
           "extract_features", "fit", "import_caffe", "import_torchvision", "load_model", "neighbors", "predict",
           "prepare", "TwoTowerAlexNet", "variant_info", "__version__"]
