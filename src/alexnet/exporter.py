"""Moving weights in and out: ONNX and torch.export, torchvision's and Caffe's weights.

Exported graphs take what the network takes (normalised float images,
(B, 3, crop, crop), any batch size) and return logits; with ``preprocess`` they
take uint8 images (B, 3, S, S) at the stored size, and do the center crop, the
normalisation and the softmax themselves, so a runtime needs nothing else.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .training.checkpoint import load_model, load_state, metadata_record, save_weights
from .classes import class_names
from .data.transforms import Normalizer, normalized_window
from .errors import AlexNetError
from .files import output_file
from .models import pretrained
from .models.registry import create_model

FORMATS = ("onnx", "torch-export")


class Preprocessed(nn.Module):
    """uint8 (B, 3, S, S) -> class probabilities: center crop and normalisation as evaluation
    does them (``normalized_window``), the network, softmax."""

    def __init__(self, model: nn.Module, normalizer: Normalizer, resize: int, crop: int) -> None:
        super().__init__()
        self.model, self.crop, self.offset = model, crop, (resize - crop) // 2
        self.register_buffer("mean", normalizer.mean.clone())
        self.register_buffer("std", normalizer.std.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = normalized_window(images, self.mean, self.std, self.offset, self.offset, self.crop)
        return torch.softmax(self.model(x), dim=1)


def exportable(weights: str | Path, preprocess: bool) -> tuple[nn.Module, torch.Tensor, dict]:
    """The module to export, an example input, and the weights' metadata."""
    model, normalizer, meta = load_model(weights)
    crop, resize = meta["input_size"], meta["resize"]
    if preprocess:
        module = Preprocessed(model, normalizer, resize, crop).eval()
        example = torch.randint(0, 256, (2, 3, resize, resize), dtype=torch.uint8)
    else:
        module = model.eval()
        example = torch.randn(2, 3, crop, crop)
    return module, example, meta


def export_onnx(weights: str | Path, out: str | Path, preprocess: bool = False, opset: int = 18,
                check: bool = True) -> dict:
    """Write an ONNX graph with a dynamic batch dimension; with ``check``, run it in ONNX
    Runtime on batches of 1 and 3 and compare with PyTorch."""
    module, example, meta = exportable(weights, preprocess)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_onnx(module, example, out, opset)
    report = {"format": "onnx", "path": str(out), "input": list(example.shape[1:]),
              "input_dtype": str(example.dtype).replace("torch.", ""), "preprocess": preprocess}
    if check:
        report["max_abs_diff"] = check_onnx(module, out, example)
    return report


def write_onnx(module: nn.Module, example: torch.Tensor, out: str | Path, opset: int = 18) -> None:
    """``module`` as an ONNX graph: input "images" and output "output", both with a dynamic batch."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise AlexNetError("ONNX export needs the onnx and onnxruntime packages: pip install 'alexnet[export]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding and deprecation
        torch.onnx.export(module, (example,), str(out), input_names=["images"], output_names=["output"],
                          dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}}, opset_version=opset,
                          dynamo=False)


def check_onnx(module: nn.Module, path: str | Path, example: torch.Tensor) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (1, 3):
        shape, g = (batch, *example.shape[1:]), torch.Generator().manual_seed(batch)
        if example.dtype == torch.uint8:
            x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        else:
            x = torch.randn(shape, generator=g)
        with torch.no_grad():
            expected = module(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        if got.shape != expected.shape:
            raise AlexNetError(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
        scale = max(float(np.abs(expected).max()), 1.0)
        diff = float(np.abs(got - expected).max())
        if diff > 1e-4 * scale:
            raise AlexNetError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (batch {batch})")
        worst = max(worst, diff)
    return worst


def export_torch(weights: str | Path, out: str | Path, preprocess: bool = False) -> dict:
    """A ``torch.export`` program (.pt2) with a dynamic batch; load with ``torch.export.load``."""
    module, example, meta = exportable(weights, preprocess)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out))
    with torch.no_grad():
        diff = float((torch.export.load(str(out)).module()(example) - module(example)).abs().max())
    return {"format": "torch-export", "path": str(out), "input": list(example.shape[1:]),
            "preprocess": preprocess, "max_abs_diff": diff}


def export(weights: str | Path, fmt: str, out: str | Path | None = None, preprocess: bool = False) -> dict:
    if fmt not in FORMATS:
        raise AlexNetError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out is None:  # beside the weights: runs/x/model.onnx, or w.safetensors -> w.onnx
        suffix = {"onnx": ".onnx", "torch-export": ".pt2"}[fmt]
        w = Path(weights)
        out = w / f"model{suffix}" if w.is_dir() else w.with_suffix(suffix)
    output_file(out)  # before the work, not after it
    return export_onnx(weights, out, preprocess) if fmt == "onnx" else export_torch(weights, out, preprocess)


# ---------------------------------------------------------------------------
# Importers.

def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AlexNetError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
            raise AlexNetError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise AlexNetError(f"{path} is not a readable PyTorch weights file ({type(e).__name__}); "
                           "only plain state dicts are loaded (weights_only=True)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AlexNetError(f"{path} does not hold a state dict of tensors")
    return state


def import_torchvision(path: str | Path, out: str | Path) -> dict:
    """torchvision's published ``alexnet`` weights -> our weights file: a file (e.g.
    alexnet-owt-7be5be79.pth) or a published name ("IMAGENET1K_V1": from the hub cache, else
    downloaded, its hash checked)."""
    entry = pretrained.published_source(path)
    if entry is not None:
        path = pretrained.weights_file(entry)
    state = _read_state_dict(Path(path))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    num_classes = state["classifier.6.weight"].shape[0] if "classifier.6.weight" in state else 1000
    model = create_model("torchvision", num_classes=num_classes)
    load_state(model, state, str(path))
    meta = metadata_record(model, "torchvision", class_names(num_classes), crop=224, resize=256, source=str(path),
                           published_accuracy=pretrained.PUBLISHED["IMAGENET1K_V1"].accuracy)
    save_weights(out, model, Normalizer.channel(), meta)
    return meta
