"""AlexNet (Krizhevsky, Sutskever, Hinton 2012): the paper's network and recipe, done right and fast.

The package in layers (each imports only from those above it):

- ``errors``, ``files``, ``classes``, ``progress``: what every layer shares;
- ``models``: the networks, their layers (LRN, towers) and the registry;
- ``data``: datasets, packed files, the loader and the batched transforms;
- ``training``: the configuration, the loop, checkpoints, evaluation, many devices;
- ``reproduce``: the paper's claims, run and judged;
- the applications: ``infer``, ``serve``, ``exporter``, ``caffe``, ``bench``, ``explain``,
  ``visualize`` (their settings in ``options``), and ``cli`` over all of them.

The public names below are imported when first used, so ``alexnet --help`` and
``import alexnet`` stay fast and load torch only when a name needs it.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AlexNet": "models.alexnet",
    "TwoTowerAlexNet": "models.towers",
    "VARIANTS": "models.registry",
    "create_model": "models.registry",
    "variant_info": "models.registry",
    "AlexNetError": "errors",
    "TrainConfig": "training.config",
    "fit": "training.train",
    "load_model": "training.checkpoint",
    "prepare": "data.packed",
    "evaluate_weights": "infer",
    "extract_features": "infer",
    "neighbors": "infer",
    "predict": "infer",
    "export": "exporter",
    "import_torchvision": "exporter",
    "import_caffe": "caffe",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # alexnet.models, alexnet.infer, ...
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
