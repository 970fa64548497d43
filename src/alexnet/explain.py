"""See inside a network for one image (``alexnet explain RUN IMAGE --out DIR``): its top-5, what
each stage of the network responds with, and where the evidence for the top class lies.

- **Stages**: for each convolutional stage (conv1, conv2, ... of any variant, counted in the
  order the input meets them) the maps after its nonlinearity: the most active channels as
  one grid, and the stage's sparsity (the fraction of its ReLU outputs that are zero).
- **Occlusion** (Zeiler and Fergus 2014): the drop in the top class's score when a gray square
  (the mean, 0 after normalisation) covers each place of the crop.
- **Grad-CAM** (Selvaraju et al. 2017) at the last convolutional stage and at ``layer``: the
  stage's maps weighted by their gradients' spatial means, positive part, upsampled.
- **Integrated gradients** (Sundararajan et al. 2017) from the mean image.

The three attribution methods are Captum's (PyTorch's interpretability library, pinned in
constraints.txt), not written here. Every picture is a PNG in DIR, and ``summary.json`` lists
them with the figures they show.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import AlexNetError
from .files import atomic_write, atomic_write_text, printable

TOP_CHANNELS = 16  # maps shown per stage


@dataclass
class Stage:
    name: str  # conv1, conv2, ...
    module: str  # its module path (features.conv1, features.3, ...)
    conv: nn.Module
    act: nn.Module | None  # the nonlinearity after it (its output is the stage's maps)


def stages(model: nn.Module) -> list[Stage]:
    """The convolutional stages in the order the input meets them: each convolution (or
    locally connected layer) of ``features`` and the nonlinearity that follows it."""
    from .models.convnet import LocallyConnected2d

    children = list(model.features.named_children())
    out = []
    for i, (name, m) in enumerate(children):
        if isinstance(m, (nn.Conv2d, LocallyConnected2d)):
            act = next((c for _, c in children[i + 1:] if not isinstance(c, (nn.Conv2d, LocallyConnected2d))
                        and _is_activation(c)), None)
            out.append(Stage(f"conv{len(out) + 1}", f"features.{name}", m, act))
    return out


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, (nn.ReLU, nn.Tanh)) or type(m).__name__ in ("ScaledTanh",)


def stage_named(model: nn.Module, name: str) -> Stage:
    found = {s.name: s for s in stages(model)}
    if name not in found:
        raise AlexNetError(f"--layer {name!r}: this network's stages are {', '.join(found)}")
    return found[name]


@contextlib.contextmanager
def explainable(model: nn.Module):
    """The network in eval mode with out-of-place ReLUs (attribution hooks read activations
    that an in-place ReLU would overwrite) and the plain fc6, restored afterwards: no copy of
    the weights, so a server can explain with the network it serves (one thread at a time)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    training = model.training
    own = model.__dict__.get("_fc6_first", _UNSET)  # an instance value to put back, or none
    model.eval()
    for m in relus:
        m.inplace = False
    model._fc6_first = False  # the plain fc6, whose hooks and gradients are the ordinary ones
    try:
        yield model
    finally:
        if own is _UNSET:
            del model._fc6_first
        else:
            model._fc6_first = own
        for m in relus:
            m.inplace = True
        model.train(training)


_UNSET = object()


# ---------------------------------------------------------------------------
# The computations, on a normalised crop x (1, 3, h, w) and a target class.


@torch.no_grad()
def stage_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each stage's maps (C, h, w) after its nonlinearity (or the convolution's, without one)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [_keep_output(s.act if s.act is not None else s.conv, seen, s.name) for s in stages(model)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return {name: maps[0] for name, maps in seen.items()}


def _keep_output(module: nn.Module, store: dict, key: str):
    """A forward hook that keeps ``module``'s output (detached) in ``store[key]`` and returns
    nothing, so the output stays the module's; the handle, to remove it."""
    def hook(mod, inputs, output) -> None:
        store[key] = output.detach()
    return module.register_forward_hook(hook)


def occlusion(model: nn.Module, x: torch.Tensor, target: int, window: int, stride: int) -> torch.Tensor:
    from captum.attr import Occlusion

    attr = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(3, window, window),
                                      strides=(3, stride, stride), baselines=0.0)
    return attr[0].sum(0).detach()  # (h, w): positive where covering lowers the score


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, stage: Stage) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    where = stage.act if stage.act is not None else stage.conv
    cam = LayerGradCam(model, where).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0].detach()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: int, steps: int) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps)
    return attr[0].abs().sum(0).detach()


# ---------------------------------------------------------------------------
# Pictures.


def heat_image(crop_rgb: np.ndarray, heat: torch.Tensor) -> np.ndarray:
    """The crop with ``heat`` (h, w; its positive part, scaled to its maximum) laid over it in red."""
    h = heat.clamp_min(0).float().cpu().numpy()
    h = h / h.max() if h.max() > 0 else h
    base = crop_rgb.astype(np.float32) * 0.55
    overlay = np.stack([255 * h, 40 * h, 40 * h], -1)
    return np.clip(base + 0.45 * overlay * 2, 0, 255).astype(np.uint8)


def save_png(image: np.ndarray, out: Path, min_side: int = 0) -> None:
    """``image`` as a PNG, enlarged by a whole factor (pixels kept square and sharp) until its
    shorter side is at least ``min_side``: a 24-px crop's heat map is drawn at 240 px."""
    from PIL import Image

    factor = max(1, -(-min_side // min(image.shape[:2]))) if min_side else 1
    if factor > 1:
        image = np.kron(image, np.ones((factor, factor) + (1,) * (image.ndim - 2), np.uint8))
    atomic_write(out, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def maps_image(maps: torch.Tensor, channels: list[int], cell: int = 64, columns: int = 8) -> np.ndarray:
    """The chosen channels' maps side by side in rows of ``columns``, each stretched to [0, 255]
    on its own."""
    cols = min(columns, len(channels))
    rows = -(-len(channels) // cols)
    grid = np.full((rows * (cell + 2) + 2, cols * (cell + 2) + 2), 255, np.uint8)
    for k, c in enumerate(channels):
        m = maps[c].float().cpu()
        m = (m - m.min()) / (m.max() - m.min() + 1e-12)
        tile = torch.nn.functional.interpolate(m[None, None], size=(cell, cell), mode="nearest")[0, 0]
        r, q = divmod(k, cols)
        grid[2 + r * (cell + 2): 2 + r * (cell + 2) + cell, 2 + q * (cell + 2): 2 + q * (cell + 2) + cell] = \
            (tile.numpy() * 255).astype(np.uint8)
    return grid


# ---------------------------------------------------------------------------
# The command.


def _captum_version() -> str:
    try:
        import captum
    except ImportError:
        raise AlexNetError("alexnet explain needs Captum: pip install captum (or the package's [explain] extra)") \
            from None
    return captum.__version__


def describe(net, img: torch.Tensor, layer: str = "", topk: int = 5, ig_steps: int = 32,
             methods: tuple[str, ...] = ("occlusion", "gradcam", "integrated_gradients"),
             columns: int = 8) -> dict:
    """One decoded image (uint8 3 x S x S) through a loaded network (``infer.Loaded``): the
    figures of summary.json, and the pictures as arrays under ``images`` (stage maps as
    ``maps_convN``, heat maps by method). Shared by the command and the server."""
    from .classes import class_names

    captum_version = _captum_version()
    with explainable(net.model) as model:
        chosen = stage_named(model, layer) if layer else None
        last = stages(model)[-1]
        x = net.crops(False)(img[None].to(net.device))[:, 0]  # (1, 3, crop, crop), normalised
        crop = x.shape[-1]
        mid = (img.shape[-1] - crop) // 2
        crop_rgb = img[:, mid:mid + crop, mid:mid + crop].permute(1, 2, 0).cpu().numpy()
        names = class_names(net.meta["num_classes"], net.meta.get("classes"))
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        top = probs.topk(min(topk, len(names)))
        target = int(top.indices[0])
        result = {"variant": net.meta["variant"], "crop": crop,
                  "top": [{"index": int(i), "class": names[int(i)], "prob": float(p)}
                          for p, i in zip(top.values, top.indices)],
                  "target": {"index": target, "class": names[target]},
                  "library": {"attribution": f"captum {captum_version}"}, "stages": [], "images": {}}
        for name, maps in stage_maps(model, x).items():
            strength = maps.flatten(1).mean(1)
            channels = strength.topk(min(TOP_CHANNELS, len(strength))).indices.tolist()
            relu = isinstance(next(s for s in stages(model) if s.name == name).act, nn.ReLU)
            result["images"][f"maps_{name}"] = maps_image(maps, channels, columns=columns)
            result["stages"].append({"name": name, "shape": list(maps.shape), "channels_shown": channels,
                                     "sparsity": float((maps == 0).float().mean()) if relu else None})
        window = max(2, crop // 8)
        heats = {}
        if "occlusion" in methods:
            heats["occlusion"] = occlusion(model, x, target, window, max(1, window // 2))
            result["occlusion"] = {"window": window, "stride": max(1, window // 2),
                                   "baseline": "the mean (0 normalised)"}
        if "gradcam" in methods:
            heats[f"gradcam_{last.name}"] = grad_cam(model, x, target, last)
            if chosen is not None and chosen.name != last.name:
                heats[f"gradcam_{chosen.name}"] = grad_cam(model, x, target, chosen)
        if "integrated_gradients" in methods:
            heats["integrated_gradients"] = integrated_gradients(model, x, target, ig_steps)
            result["integrated_gradients"] = {"steps": ig_steps, "baseline": "the mean image (0 normalised)"}
        for key, heat in heats.items():
            result["images"][key] = heat_image(crop_rgb, heat)
    return result


def explain(weights: str | Path, image: str, out: str | Path, layer: str = "", device: str = "cpu",
            topk: int = 5, ig_steps: int = 32) -> dict:
    """Everything of the module docstring for one image: PNGs and summary.json in ``out``."""
    from . import __version__
    from .data.folder import UnreadableImage, load_image
    from .infer import Loaded

    _captum_version()
    net = Loaded.from_path(weights, device)
    try:
        img = load_image(str(image), net.meta["resize"])
    except UnreadableImage as e:
        raise AlexNetError(f"{printable(image)}: {e}") from None
    except FileNotFoundError:
        raise AlexNetError(f"{printable(image)}: no such file") from None
    result = describe(net, img, layer, topk, ig_steps)
    images = result.pop("images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for key, picture in images.items():
        save_png(picture, out / f"{key}.png", min_side=0 if key.startswith("maps_") else 224)
    summary = {"image": printable(image), "weights": printable(weights), **result,
               "library": {**result["library"], "alexnet": __version__},
               "files": {k: f"{k}.png" for k in images if not k.startswith("maps_")}}
    for stage in summary["stages"]:
        stage["file"] = f"maps_{stage['name']}.png"
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------
# The image patches that excite chosen units most (Zeiler and Fergus's Fig. 2).


def field_geometry(model: nn.Module, stage: Stage) -> tuple[int, int, int]:
    """(size, stride, start) of the receptive field of ``stage``'s units on the input: unit
    (i, j) sees rows start + i * stride .. + size (and the same for columns), worked out layer
    by layer up to the stage: k - 1 strides wider, the stride times s, the start moved back by
    the padding."""
    from .models.summary import _window

    size, stride, start = 1, 1, 0
    for name, m in model.features.named_children():
        window = _window(m)
        if window is not None:
            k, s, pad = window
            start -= pad * stride
            size += (k - 1) * stride
            stride *= s
        if m is (stage.act if stage.act is not None else stage.conv):
            return size, stride, start
    raise AlexNetError(f"stage {stage.name} is not in the network's features")


@torch.no_grad()
def top_patches(model: nn.Module, batches, stage: Stage, channels: list[int], k: int = 9) -> dict[int, list[dict]]:
    """For each channel of ``stage``, the ``k`` strongest responses over ``batches`` (an iterable
    of normalised crops (B, 3, h, w)): image number, the unit's position, its value and its
    receptive field's box on the crop (top, left, bottom, right), clipped to the crop."""
    size, stride, start = field_geometry(model, stage)
    where = stage.act if stage.act is not None else stage.conv
    best: dict[int, list[tuple[float, int, int, int]]] = {c: [] for c in channels}
    seen: dict[str, torch.Tensor] = {}
    hook = _keep_output(where, seen, "maps")
    offset, crop = 0, None
    try:
        for x in batches:
            model(x)
            maps = seen["maps"][:, channels]  # (B, len(channels), h, w)
            w = maps.shape[-1]
            flat = maps.flatten(2)
            values, where_max = (t.cpu().tolist() for t in flat.max(2))  # each image's strongest unit per channel
            for n, c in enumerate(channels):
                for b in range(x.shape[0]):
                    best[c].append((values[b][n], offset + b, *divmod(where_max[b][n], w)))
                best[c] = sorted(best[c], reverse=True)[:k]
            offset += x.shape[0]
            crop = x.shape[-1]
    finally:
        hook.remove()
    if crop is None:
        raise AlexNetError("no images to search")
    out = {}
    for c, found in best.items():
        out[c] = [{"value": v, "image": img, "unit": [i, j],
                   "box": [max(start + i * stride, 0), max(start + j * stride, 0),
                           min(start + i * stride + size, crop), min(start + j * stride + size, crop)]}
                  for v, img, i, j in found]
    return out


def patches_image(crops: dict[int, np.ndarray], found: dict[int, list[dict]], cell: int = 48) -> np.ndarray:
    """One row per unit, its top patches left to right, each resized to ``cell`` px."""
    from PIL import Image

    rows, cols = len(found), max(len(v) for v in found.values())
    grid = np.full((rows * (cell + 2) + 2, cols * (cell + 2) + 2, 3), 255, np.uint8)
    for r, hits in enumerate(found.values()):
        for q, hit in enumerate(hits):
            t, l, b, rgt = hit["box"]
            patch = Image.fromarray(crops[hit["image"]][t:b, l:rgt]).resize((cell, cell), Image.NEAREST)
            grid[2 + r * (cell + 2): 2 + r * (cell + 2) + cell, 2 + q * (cell + 2): 2 + q * (cell + 2) + cell] = \
                np.asarray(patch)
    return grid


def _center_crop(path: str, resize: int, size: int) -> np.ndarray:
    """The uint8 center crop (size, size, 3) of an image file, as the network saw it."""
    from .data.folder import load_image

    img = load_image(path, resize)
    mid = (img.shape[-1] - size) // 2
    return img[:, mid:mid + size, mid:mid + size].permute(1, 2, 0).numpy()


def parse_units(text: str, model: nn.Module) -> tuple[Stage, list[int]]:
    """'conv5' (its first 8 channels) or 'conv5:3,7,12' -> the stage and its channels."""
    name, _, picks = text.partition(":")
    stage = stage_named(model, name)
    count = stage.conv.out_channels
    try:
        channels = [int(c) for c in picks.split(",")] if picks else list(range(min(8, count)))
    except ValueError:
        raise AlexNetError(f"--units {text!r}: channels are numbers separated by commas, e.g. conv5:3,7,12") from None
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise AlexNetError(f"--units {text!r}: {name} has channels 0-{count - 1}, not {bad[0]}")
    return stage, channels


def explain_units(weights: str | Path, units: str, data: str, out: str | Path, k: int = 9, device: str = "cpu",
                  batch_size: int = 32, workers: int = 0) -> dict:
    """The ``k`` patches of the images under ``data`` that excite each of ``units`` most, as
    ``units_STAGE.png`` (a row per unit) and ``units.json``."""
    from .infer import Loaded

    net = Loaded.from_path(weights, device)
    with explainable(net.model) as model:
        return _units(net, model, units, data, out, k, batch_size, workers)


def _units(net, model, units: str, data: str, out: str | Path, k: int, batch_size: int, workers: int) -> dict:
    from .infer import expand_inputs, iterate_images

    stage, channels = parse_units(units, model)
    paths = expand_inputs([data])
    if not paths:
        raise AlexNetError(f"--data {printable(data)}: no images found")
    files = []  # each searched image's file: the winners are read again at the end, nothing else is kept
    crops, size = net.crops(False), net.meta["input_size"]

    def views():  # normalised crops, a batch at a time
        for images, batch_paths in iterate_images(paths, net.meta["resize"], batch_size, workers, "units", False):
            files.extend(batch_paths)
            yield crops(images.to(net.device))[:, 0]

    found = top_patches(model, views(), stage, channels, k)
    winners = {h["image"] for hits in found.values() for h in hits}
    crop_rgb = {i: _center_crop(files[i], net.meta["resize"], size) for i in winners}
    names = {i: printable(files[i]) for i in winners}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_png(patches_image(crop_rgb, found), out / f"units_{stage.name}.png")
    result = {"stage": stage.name, "field": dict(zip(("size", "stride", "start"), field_geometry(model, stage))),
              "images": len(files), "units": {str(c): [{**h, "path": names[h["image"]]} for h in hits]
                                             for c, hits in found.items()},
              "file": f"units_{stage.name}.png"}
    atomic_write_text(out / "units.json", json.dumps(result, indent=2) + "\n")
    return result
