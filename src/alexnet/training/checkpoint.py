"""Checkpoints and weights files: atomic writes, no pickled code on load.

Two kinds of file, both self-describing:

``checkpoint.pt``
    Everything needed to resume training: model, optimizer and schedule state,
    the resolved config, the normaliser, the class names and the metrics so far.
    Written with ``torch.save`` and read with ``torch.load(weights_only=True)``,
    which only rebuilds tensors and plain containers, never arbitrary objects.

``model.safetensors``
    The weights for inference, with the normaliser's tensors beside them and a
    JSON metadata record (variant, classes, input size, preprocessing, measured
    accuracy with its protocol, config) in the safetensors header.

Every write goes to a temporary file in the same directory, is flushed to disk,
then renamed over the target: a crash leaves the old file or the new one, never
half of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.transforms import Normalizer
from ..errors import AlexNetError
from ..files import atomic_write
from .rundir import RunDir
from ..models import pretrained
from ..models.registry import create_model

CHECKPOINT_FORMAT = "alexnet-checkpoint/1"
WEIGHTS_FORMAT = "alexnet-weights/1"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers,
    so saved keys carry no ``module.`` or ``_orig_mod.`` prefix."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write atomically; a failed write (a full disk) is one line, and the previous checkpoint
    stays as it was."""
    state = {"format": CHECKPOINT_FORMAT, **state}
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AlexNetError(f"could not write the checkpoint {path} ({reason}); "
                           "the previous checkpoint is as it was") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint
    if not path.is_file():
        raise AlexNetError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or one that would need pickled code
        raise AlexNetError(f"{path} is not a readable alexnet checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise AlexNetError(f"{path} is not an alexnet checkpoint")
    return state


@dataclass
class RunState:
    """What ``checkpoint.pt`` holds, the one place its layout is named: the resolved config
    (``to_dict``), the epochs finished, the model's, optimizer's, schedule's and normaliser's
    state, the metrics so far, the weights' metadata record, and for a checkpoint taken inside
    an epoch every process's place in it (``position``)."""

    config: dict
    epoch: int
    model: dict
    optimizer: dict
    schedule: dict
    normalizer: dict
    history: list
    meta: dict
    position: dict | None = None

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> "RunState":
        state = load_checkpoint(path)
        return cls(**{f.name: state.get(f.name) for f in fields(cls)})


def metadata_record(model: nn.Module, variant: str, classes: list[str], crop: int, resize: int,
                    **extra: Any) -> dict[str, Any]:
    """The record a weights file carries; ``model_kwargs`` are the network's own options."""
    model = unwrap(model)
    return {"format": WEIGHTS_FORMAT, "variant": variant, "num_classes": model.num_classes,
            "classes": list(classes), "input_size": crop, "resize": resize, "model_kwargs": model.options(),
            "num_params": sum(p.numel() for p in model.parameters()), **extra}


def save_weights(path: str | Path, model: nn.Module, normalizer, meta: dict[str, Any]) -> None:
    """Weights + normaliser tensors + metadata as one safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    for k, v in normalizer.state_dict().items():
        tensors[f"normalizer.{k}"] = v.contiguous()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"alexnet": json.dumps(meta)}))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, normaliser state, metadata) of an alexnet safetensors file."""
    tensors, meta = _read_safetensors(path, tensors=True)
    norm = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("normalizer.")}
    state = {k: v for k, v in tensors.items() if not k.startswith("normalizer.")}
    return state, norm, meta


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata record of an alexnet safetensors file, without reading its tensors."""
    return _read_safetensors(path, tensors=False)[1]


def _read_safetensors(path: str | Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The file's tensors (when asked) and its alexnet metadata record: the one reader of both."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get("alexnet")
            found = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as e:
        raise AlexNetError(f"{path} is not a readable safetensors file ({e})") from None
    if meta_raw is None:
        raise AlexNetError(f"{path} has no alexnet metadata record")
    try:
        return found, json.loads(meta_raw)
    except ValueError:
        raise AlexNetError(f"{path} has a damaged alexnet metadata record") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a one-line error naming the first mismatch."""
    target = unwrap(model).state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise AlexNetError(f"{source} does not fit this network: {what} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected keys); wrong variant?")
    for k, v in state.items():
        if v.shape != target[k].shape:
            raise AlexNetError(f"{source} does not fit this network: {k} has shape {tuple(v.shape)}, "
                               f"expected {tuple(target[k].shape)} (another variant or class count?)")
    unwrap(model).load_state_dict(state)


def find_weights(path: str | Path) -> Path:
    """A run directory's weights (model.safetensors, else checkpoint.pt), or the file itself."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).find_weights()
    if not path.exists():
        raise AlexNetError(f"{path} not found")
    return path


def load_model(path: str | Path, variant: str | None = None, num_classes: int | None = None):
    """Rebuild a trained network from a run directory, checkpoint or weights file.

    Returns ``(model in eval mode, Normalizer, metadata)``. ``variant`` and
    ``num_classes``, when given, must match what the file holds. A published name that is not
    a file here ("IMAGENET1K_V1") loads those weights (``models.pretrained``).
    """
    if pretrained.published_source(path) is not None:
        return load_published(path, variant, num_classes)
    p = find_weights(path)
    if p.suffix == ".safetensors":
        state, norm, meta = read_weights(p)
    else:
        run = RunState.load(p)
        state, norm, meta = run.model, run.normalizer, {**run.meta, "config": run.config}
    if variant is not None and meta["variant"] != variant:
        raise AlexNetError(f"{p} holds a {meta['variant']!r} network, not {variant!r}")
    if num_classes is not None and meta["num_classes"] != num_classes:
        raise AlexNetError(f"{p} has {meta['num_classes']} classes, not {num_classes}")
    model = create_model(meta["variant"], meta["num_classes"], **meta.get("model_kwargs", {}))
    load_state(model, state, str(p))
    return model.eval(), Normalizer.from_state_dict(norm), meta


def load_published(name, variant: str | None = None, num_classes: int | None = None):
    """Published weights as ``load_model`` returns a file's: the model in eval mode, the
    normaliser they were trained with, and a metadata record (ImageNet's class names, the
    evaluation crop, the accuracy as published)."""
    from ..classes import class_names

    entry = pretrained.require(name)
    model = create_model(variant or entry.variant, num_classes or entry.num_classes, weights=entry.name)
    meta = metadata_record(model, entry.variant, class_names(entry.num_classes), crop=entry.crop,
                           resize=entry.resize, source=f"{entry.name} ({entry.url})",
                           published_accuracy=entry.accuracy)
    return model.eval(), Normalizer.channel(), meta
