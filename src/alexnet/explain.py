"""See inside a network for one image (``alexnet explain RUN IMAGE --out DIR``): its top-5, what
each stage of the network responds with, and where the evidence for the top class lies.

- **Stages**: for each convolutional stage (conv1, conv2, ... of any variant, counted in the
  order the input meets them) the maps after its nonlinearity: the most active channels as
  one grid, and the stage's sparsity (the fraction of its ReLU outputs that are zero); where
  asked (``all_maps``), also its normalised and pooled maps (norm1, pool1, ...).
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
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import AlexNetError
from .files import atomic_write, atomic_write_text, output_folder, printable

TOP_CHANNELS = 16  # maps shown per stage


@dataclass
class Stage:
    name: str  # conv1, conv2, ...
    conv: nn.Module
    act: nn.Module | None  # the nonlinearity after it (its output is the stage's maps)
    # the normalisation and pooling layers of the stage, up to the next convolution, as (name,
    # module, whether the stage's ReLU comes before it): norm1 and pool1 for the paper's conv1
    # (ReLU, LRN, max-pool); norm1 before the ReLU with --norm batch
    after: list[tuple[str, nn.Module, bool]] = field(default_factory=list)

    @property
    def output(self) -> nn.Module:
        """The module whose output is the stage's maps."""
        return self.act if self.act is not None else self.conv


def stages(model: nn.Module) -> list[Stage]:
    """The convolutional stages in the order the input meets them: each convolution (or
    locally connected layer) of ``features``, the nonlinearity that follows it, and the
    normalisation and pooling layers before the next convolution."""
    from .models.convnet import LocallyConnected2d

    out: list[Stage] = []
    for m in model.features.children():
        if isinstance(m, (nn.Conv2d, LocallyConnected2d)):
            out.append(Stage(f"conv{len(out) + 1}", m, None))
        elif out and _is_activation(m) and out[-1].act is None:
            out[-1].act = m
        elif out and (kind := _kind(m)):
            out[-1].after.append((f"{kind}{len(out)}", m, isinstance(out[-1].act, nn.ReLU)))
    return out


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, (nn.ReLU, nn.Tanh)) or type(m).__name__ in ("ScaledTanh",)


def _kind(m: nn.Module) -> str:
    """'norm' for a normalisation layer (LRN, batch norm, cuda-convnet's rnorm), 'pool' for a
    pooling layer, else ''."""
    name = type(m).__name__
    return "norm" if "Norm" in name else "pool" if "Pool" in name else ""


def map_points(model: nn.Module, extra: bool = False) -> list[tuple[str, nn.Module, bool]]:
    """(name, module, after a ReLU) of every map a stage gives: conv1, conv2, ..., and with
    ``extra`` also each stage's normalised and pooled maps (norm1, pool1, ...), in the order the
    input meets them."""
    order = {id(m): i for i, m in enumerate(model.features.children())}
    points = []
    for s in stages(model):
        points += sorted([(s.name, s.output, isinstance(s.act, nn.ReLU)), *(s.after if extra else [])],
                         key=lambda p: order[id(p[1])])  # batch norm comes before its stage's ReLU
    return points


def point_named(model: nn.Module, name: str, flag: str = "--layer") -> nn.Module:
    """The module whose output is the map called ``name`` (conv2, norm2, pool5, ...)."""
    found = {n: m for n, m, _ in map_points(model, extra=True)}
    if name not in found:
        raise AlexNetError(f"{flag} {name!r}: this network's maps are {', '.join(found)}")
    return found[name]


def stage_named(model: nn.Module, name: str, flag: str = "--layer") -> Stage:
    found = {s.name: s for s in stages(model)}
    if name not in found:
        raise AlexNetError(f"{flag} {name!r}: this network's stages are {', '.join(found)}")
    return found[name]


@contextlib.contextmanager
def explainable(model: nn.Module):
    """The network in eval mode with out-of-place ReLUs (attribution hooks read activations
    that an in-place ReLU would overwrite) and the plain fc6, restored afterwards: no copy of
    the weights, so a server can explain with the network it serves (one thread at a time)."""
    from .models.alexnet import plain_fc6

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    training = model.training
    model.eval()
    for m in relus:
        m.inplace = False
    try:
        with plain_fc6(model):  # whose hooks and gradients are the ordinary ones
            yield model
    finally:
        for m in relus:
            m.inplace = True
        model.train(training)


# ---------------------------------------------------------------------------
# The computations, on a normalised crop x (1, 3, h, w) and a target class.


@torch.no_grad()
def stage_maps(model: nn.Module, x: torch.Tensor, extra: bool = False) -> dict[str, torch.Tensor]:
    """Each stage's maps (C, h, w) after its nonlinearity (or the convolution's, without one),
    and with ``extra`` its normalised and pooled maps, by the names of ``map_points``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [_keep_output(m, seen, name) for name, m, _ in map_points(model, extra)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return {name: maps[0] for name, maps in seen.items()}


def most_active(maps: torch.Tensor, relu: bool, count: int = 16) -> tuple[list[int], float | None]:
    """The ``count`` channels of ``maps`` (C, h, w) with the largest mean response, strongest
    first, and the sparsity: the fraction of the maps that are zero (None where no ReLU came
    before them, when zero means nothing)."""
    strength = maps.flatten(1).float().mean(1)
    channels = strength.topk(min(count, len(strength))).indices.tolist()
    return channels, float((maps == 0).float().mean()) if relu else None


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


def grad_cam(model: nn.Module, x: torch.Tensor, target: int, where: nn.Module) -> torch.Tensor:
    """Grad-CAM at the output of ``where`` (a stage's ``output``, or any map of ``map_points``)."""
    from captum.attr import LayerAttribution, LayerGradCam

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
        raise AlexNetError("alexnet explain needs Captum, a dependency of the package: pip install 'captum>=0.7'") \
            from None
    return captum.__version__


def describe(net, img: torch.Tensor, layer: str = "", topk: int = 5, ig_steps: int = 32,
             methods: tuple[str, ...] = ("occlusion", "gradcam", "integrated_gradients"),
             columns: int = 8, all_maps: bool = False) -> dict:
    """One decoded image (uint8 3 x S x S) through a loaded network (``infer.Loaded``): the
    figures of summary.json, and the pictures as arrays under ``images`` (maps as ``maps_NAME``,
    heat maps by method). ``layer``: Grad-CAM there too (any map of ``map_points``);
    ``all_maps``: the normalised and pooled maps too. Shared by the command and the server."""
    from .classes import class_names

    captum_version = _captum_version()
    with explainable(net.model) as model:
        chosen = (layer, point_named(model, layer)) if layer else None  # (name, module)
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
        relu = {name: r for name, _, r in map_points(model, all_maps)}
        for name, maps in stage_maps(model, x, all_maps).items():
            channels, sparsity = most_active(maps, relu[name], TOP_CHANNELS)
            result["images"][f"maps_{name}"] = maps_image(maps, channels, columns=columns)
            result["stages"].append({"name": name, "shape": list(maps.shape), "channels_shown": channels,
                                     "sparsity": sparsity})
        result["images"].update(_heat_maps(model, x, crop_rgb, target, last, chosen, methods,
                                           ig_steps, result))
    return result


def _heat_maps(model, x, crop_rgb, target, last: Stage, chosen: tuple[str, nn.Module] | None, methods,
               ig_steps: int, result: dict) -> dict:
    """The attribution methods' pictures by name; their settings added to ``result``."""
    window = max(2, x.shape[-1] // 8)
    heats = {}
    if "occlusion" in methods:
        heats["occlusion"] = occlusion(model, x, target, window, max(1, window // 2))
        result["occlusion"] = {"window": window, "stride": max(1, window // 2), "baseline": "the mean (0 normalised)"}
    if "gradcam" in methods:
        heats[f"gradcam_{last.name}"] = grad_cam(model, x, target, last.output)
        if chosen is not None and chosen[0] != last.name:
            heats[f"gradcam_{chosen[0]}"] = grad_cam(model, x, target, chosen[1])
    if "integrated_gradients" in methods:
        heats["integrated_gradients"] = integrated_gradients(model, x, target, ig_steps)
        result["integrated_gradients"] = {"steps": ig_steps, "baseline": "the mean image (0 normalised)"}
    return {key: heat_image(crop_rgb, heat) for key, heat in heats.items()}


def explain(weights: str | Path, image: str, out: str | Path, layer: str = "", device: str = "cpu",
            topk: int = 5, ig_steps: int = 32, all_maps: bool = False) -> dict:
    """Everything of the module docstring for one image: PNGs and summary.json in ``out``. The
    files an earlier explanation in ``out`` listed and this one does not write are removed
    once this one's are in place."""
    from . import __version__
    from .data.folder import UnreadableImage, load_image
    from .infer import Loaded

    _captum_version()
    out = output_folder(out)
    net = Loaded.from_path(weights, device)
    try:
        img = load_image(str(image), net.meta["resize"])
    except UnreadableImage as e:
        raise AlexNetError(f"{printable(image)}: {e}") from None
    except FileNotFoundError:
        raise AlexNetError(f"{printable(image)}: no such file") from None
    result = describe(net, img, layer, topk, ig_steps, all_maps=all_maps)
    images = result.pop("images")
    summary = {"image": printable(image), "weights": printable(weights), **result,
               "library": {**result["library"], "alexnet": __version__},
               "files": {k: f"{k}.png" for k in images if not k.startswith("maps_")}}
    for stage in summary["stages"]:
        stage["file"] = f"maps_{stage['name']}.png"
    earlier = _listed_files(out / "summary.json")
    output_folder(out, create=True)
    for key, picture in images.items():
        save_png(picture, out / f"{key}.png", min_side=0 if key.startswith("maps_") else 224)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _remove_stale(out, earlier, _listed(summary))
    return summary


# The pictures explain writes, by name: what an earlier explanation's files may be removed as.
OWN_PICTURE = re.compile(r"(maps_[a-z]+\d+|gradcam_[a-z]+\d+|units_conv\d+|occlusion|integrated_gradients)\.png")


def _listed(summary: dict) -> set[str]:
    """The files an explanation's summary.json (or a unit search's units.json) names."""
    if "stage" in summary and "field" in summary:  # units.json
        return {summary.get("file")} - {None}
    return {*summary.get("files", {}).values(), *(s.get("file") for s in summary.get("stages", []))} - {None}


def _listed_files(path: Path) -> set[str]:
    """The files named by an explanation or unit search that explain itself wrote at ``path``
    (recognised by its fields); nothing for any other file of that name."""
    try:
        found = json.loads(path.read_text())
        ours = isinstance(found, dict) and "alexnet" in found.get("library", {}) and "target" in found \
            if path.name == "summary.json" else isinstance(found, dict) and "stage" in found and "field" in found
        return _listed(found) if ours else set()
    except (OSError, ValueError, AttributeError, TypeError):  # none, or not one of ours
        return set()


def _remove_stale(out: Path, earlier: set[str], now: set[str]) -> None:
    """Remove the pictures an earlier explanation in ``out`` wrote that this one did not: only
    names of the kinds explain writes (``OWN_PICTURE``), nothing else."""
    for name in earlier - now:
        if isinstance(name, str) and OWN_PICTURE.fullmatch(name):
            (out / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# The image patches that excite chosen units most (Zeiler and Fergus's Fig. 2).


def field_geometry(model: nn.Module, stage: Stage) -> tuple[int, int, int]:
    """(size, stride, start) of the receptive field of ``stage``'s units on the input: unit
    (i, j) sees rows start + i * stride .. + size (and the same for columns), worked out layer
    by layer up to the stage as ``alexnet summary`` does."""
    from .models.summary import Field, layer_window

    rf = Field()
    for m in model.features.children():
        window = layer_window(m)
        if window is not None:
            rf.slide(window)
        if m is stage.output:
            return rf.size, rf.stride, rf.start
    raise AlexNetError(f"stage {stage.name} is not in the network's features")


@torch.no_grad()
def top_patches(model: nn.Module, batches, stage: Stage, channels: list[int], k: int = 9) -> dict[int, list[dict]]:
    """For each channel of ``stage``, the ``k`` strongest responses over ``batches`` (an iterable
    of normalised crops (B, 3, h, w)): image number, the unit's position, its value and its
    receptive field's box on the crop (top, left, bottom, right), clipped to the crop."""
    size, stride, start = field_geometry(model, stage)
    where = stage.output
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
    name, colon, picks = text.partition(":")
    stage = stage_named(model, name, flag="--units")
    count = stage.conv.out_channels
    try:
        channels = [int(c) for c in picks.split(",")] if colon else list(range(min(8, count)))
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

    out = output_folder(out)
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
    earlier = _listed_files(out / "units.json")
    output_folder(out, create=True)
    save_png(patches_image(crop_rgb, found), out / f"units_{stage.name}.png")
    result = {"stage": stage.name, "field": dict(zip(("size", "stride", "start"), field_geometry(model, stage))),
              "images": len(files), "units": {str(c): [{**h, "path": names[h["image"]]} for h in hits]
                                             for c, hits in found.items()},
              "file": f"units_{stage.name}.png"}
    atomic_write_text(out / "units.json", json.dumps(result, indent=2) + "\n")
    _remove_stale(out, earlier, {result["file"]})
    return result
