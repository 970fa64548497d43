"""AlexNet (Krizhevsky, Sutskever, Hinton 2012): the paper's network and recipe, done right and fast."""

from .errors import AlexNetError
from .models import VARIANTS, AlexNet, create_model, variant_info

__version__ = "0.1.0"

__all__ = ["AlexNet", "AlexNetError", "VARIANTS", "create_model", "variant_info", "__version__"]
