"""Using a trained network: evaluate, predict, extract features, find neighbours."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np
import torch

from .training.checkpoint import load_model
from .training.config import DataConfig, TrainConfig, from_dict
from .files import atomic_write, output_file, printable
from .classes import class_names
from .data import loader as data_loader
from .data.folder import UnreadableImage, image_files, load_image, load_or_reason, resolve_workers
from .data.transforms import EvalCrops, Normalizer
from .progress import Progress
from .errors import AlexNetError
from .training.evaluate import EvalResult, average_views, evaluate, forward_views
from .training.runtime import Runtime, autocast_dtype, resolve_device
from .training import distributed


def evaluate_weights(weights: str | Path, data: str | None = None, ten_crop: bool = False, split: str = "auto",
                     batch_size: int = 128, device: str = "auto", workers: int = -1, limit: int = 0,
                     fashion_mnist_dir: str | None = None, progress: bool = True,
                     precision: str = "fp32") -> EvalResult:
    """Top-1/top-5 of a run directory or weights file on one split of ``data``, center or 10-crop.

    ``split``: ``test`` (the data's test split), ``val`` (its val split, or the images the
    run held out of the training set), ``train``, or ``auto``: test where the data has one,
    else val. ``data`` defaults to the dataset the network was trained on; its classes must
    be the network's, in the same order. ``precision``: fp32, or bf16 autocast in channels-last
    memory (``auto``: bf16 on CUDA and on CPUs with native bf16, as training's default)."""
    if split not in ("auto", *data_loader.EVAL_SPLITS):
        raise AlexNetError(f"--split must be auto, {', '.join(data_loader.EVAL_SPLITS)}; got {split!r}")
    if precision not in ("fp32", "bf16", "auto"):
        raise AlexNetError(f"--precision must be fp32, bf16 or auto, got {precision!r}")
    if batch_size < 1:
        raise AlexNetError(f"--batch-size must be at least 1, got {batch_size}")
    model, normalizer, meta = load_model(weights)
    # the run's own settings; imported weights record no run, and no dataset
    run = from_dict(meta["config"]) if meta.get("config") else TrainConfig(data=DataConfig(data=""))
    data = data or run.data.data
    if not data:
        raise AlexNetError(f"{weights} does not record its dataset; pass --data")
    dev = resolve_device(device)
    # The run's seed: with --limit, the training images a folder run drew are the ones evaluated.
    req = data_loader.Request(splits=(), batch_size=batch_size, holdout=run.data.holdout, seed=run.seed,
                              limit_train=limit, limit_val=limit, workers=workers, train_in_order=True,
                              fashion_mnist_dir=fashion_mnist_dir or run.data.fashion_mnist_dir or None)
    splits = data_loader.build(data, meta["resize"], dev,
                               dataclasses.replace(req, splits=("test" if split == "auto" else split,)))
    if split == "auto":  # test where the data has one, else val
        split = "test" if splits.test is not None else "val"
        if split == "val":
            splits = data_loader.build(data, meta["resize"], dev, dataclasses.replace(req, splits=("val",)))
    _check_classes(data, splits.classes, meta["classes"])
    batches = splits.get(split)
    dtype = autocast_dtype(precision, dev)
    model.to(dev, memory_format=torch.channels_last if dtype else torch.contiguous_format)
    try:
        return evaluate(model, batches, EvalCrops(normalizer.to(dev), meta["input_size"], ten_crop), split=split,
                        autocast=torch.autocast(dev.type, dtype=dtype) if dtype else None,
                        channels_last=dtype is not None, progress=progress)
    finally:
        splits.close()


def _check_classes(data: str, found: list[str], expected: list[str]) -> None:
    if list(found) != list(expected):
        raise AlexNetError(f"the classes of {data!r} ({len(found)}) are not the network's ({len(expected)}): "
                           f"{', '.join(found[:3])}... vs {', '.join(expected[:3])}...")


# ---------------------------------------------------------------------------
# Predict, features, neighbours.


def expand_inputs(inputs: list[str], skipped: list[str] | None = None) -> list[str]:
    """Files as given; folders searched recursively for images, sorted. A folder with no image
    in it is named on stderr and added to ``skipped``; a named file that cannot be read is
    found out when it is loaded, like any other (the file policy, data/folder.py)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(image_files(item))
            if not found:
                print(f"alexnet: warning: skipped {printable(item)} (a folder with no images)", file=sys.stderr)
                if skipped is not None:
                    skipped.append(printable(item))
            paths += found
        else:
            paths.append(item)
    return paths


class _Paths(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return load_or_reason(self.paths[i], self.size), i, self.paths[i]


def iterate_images(paths: list[str], size: int, batch_size: int, workers: int, desc: str, progress: bool,
                   skipped: list[str] | None = None):
    """(uint8 images (B, 3, S, S), their paths) in batches; the files the policy skips are named
    on stderr with the reason, and added (printable) to ``skipped`` when given."""
    workers = min(resolve_workers(workers), max(len(paths) // batch_size, 0))  # no more than batches
    loader = torch.utils.data.DataLoader(_Paths(paths, size), batch_size=batch_size, num_workers=workers,
                                         collate_fn=data_loader.collate_images)
    bar = Progress(len(paths), desc, enabled=progress, log_every=10)
    for images, index, unreadable in loader:
        for path, why in unreadable:
            print(f"alexnet: warning: skipped {path} ({why})", file=sys.stderr)
        if skipped is not None:
            skipped += [path for path, _ in unreadable]
        bar.update(len(index) + len(unreadable))
        if images is not None:
            yield images, [paths[i] for i in index.tolist()]
    bar.close()


@dataclass
class Loaded:
    """A network ready for inference: on its device, in eval mode, with its input pipeline.

    ``precision="bf16"`` runs it under bf16 autocast in channels-last memory: on a CPU with
    bf16 instructions about twice the fp32 throughput at batch 64 (docs/benchmarks.md)."""

    model: torch.nn.Module
    normalizer: Normalizer
    meta: dict
    runtime: Runtime

    @classmethod
    def from_path(cls, weights: str | Path, device: str = "auto", precision: str = "fp32") -> "Loaded":
        if precision not in ("fp32", "bf16"):
            raise AlexNetError(f"--precision must be fp32 or bf16, got {precision!r}")
        model, normalizer, meta = load_model(weights)
        dev = resolve_device(device)
        fast = autocast_dtype(precision, dev) is not None
        model = model.to(dev, memory_format=torch.channels_last) if fast else model.to(dev)
        rt = Runtime(dev, torch.bfloat16 if fast else None, fast, distributed.Env())
        return cls(model, normalizer.to(dev), meta, rt)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def crops(self, ten_crop: bool) -> EvalCrops:
        return EvalCrops(self.normalizer, self.meta["input_size"], ten_crop)

    @property
    def names(self) -> list[str]:
        return class_names(self.meta["num_classes"], self.meta.get("classes"))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, ten_crop: bool = False) -> torch.Tensor:
        """Class probabilities (B, classes) of uint8 images (B, 3, S, S) at the network's resize:
        the center crop, or the mean over the 10 crops' softmax outputs (the paper's test). The
        views run B at a time, as ``evaluate`` runs them: ten passes of the batch, not one of ten
        times it (whose activations outgrow a CPU's caches, and a GPU's memory sooner)."""
        views = self.crops(ten_crop)(images.to(self.device))  # (B, V, 3, crop, crop)
        b, v = views.shape[:2]
        logits = forward_views(self.model, views.flatten(0, 1), max(b, 1), self.runtime.autocast(),
                               self.runtime.channels_last)
        return average_views(logits.float(), v)

    @torch.no_grad()
    def features(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        """``layer``'s activations (B, D) of uint8 images (B, 3, S, S), from the center crop."""
        return self(self.crops(False)(images.to(self.device))[:, 0], layer)

    def top(self, probs: torch.Tensor, k: int) -> list[list[dict]]:
        """Each row's ``k`` most probable classes: index, name and probability."""
        names = self.names
        top = probs.topk(min(k, len(names)), dim=1)
        return [[{"index": i, "class": names[i], "prob": q} for i, q in zip(idx, p)]
                for p, idx in zip(top.values.tolist(), top.indices.tolist())]

    def __call__(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """Logits (or ``layer``'s activations) of normalised crops (N, 3, crop, crop), in fp32."""
        with self.runtime.autocast():
            x = self.runtime.prepare(x)
            out = self.model(x) if layer is None else self.model.forward_features(x, layer)
        return out.float()


@torch.no_grad()
def predict(weights: str | Path, inputs: list[str], topk: int = 5, ten_crop: bool = False, batch_size: int = 32,
            device: str = "auto", workers: int = -1, progress: bool = True, precision: str = "fp32",
            skipped: list[str] | None = None) -> list[dict]:
    """Top-k classes with names and probabilities for every readable image (files or folders);
    the unreadable ones are named on stderr and added to ``skipped``."""
    if topk < 1 or batch_size < 1:
        raise AlexNetError("--topk and --batch-size must be at least 1")
    net = Loaded.from_path(weights, device, precision)
    results = []
    for images, paths in iterate_images(expand_inputs(inputs, skipped), net.meta["resize"], batch_size, workers,
                                        "predict", progress, skipped):
        for path, top in zip(paths, net.top(net.probabilities(images, ten_crop), topk)):
            results.append({"path": printable(path), "protocol": "ten-crop" if ten_crop else "center", "top": top})
    return results


class Features(NamedTuple):
    """A hidden layer's activations for a list of images."""

    features: np.ndarray  # (N, D) float32
    paths: list[str]
    layer: str


@torch.no_grad()
def extract_features(weights: str | Path, inputs: list[str], layer: str | None = None, batch_size: int = 64,
                     device: str = "auto", workers: int = -1, progress: bool = True,
                     precision: str = "fp32", skipped: list[str] | None = None) -> Features:
    """Activations of ``layer`` (center crop, eval mode; default the network's last hidden layer:
    fc7, or LeNet-5's f6) for every readable image; the unreadable ones are named on stderr and
    added to ``skipped``."""
    net = Loaded.from_path(weights, device, precision)
    layers = net.model.feature_layers
    layer = layer or layers[-1]
    if layer not in layers:
        raise AlexNetError(f"{net.meta['variant']} has no layer {layer!r}; choose one of {', '.join(layers)}")
    feats, kept = [], []
    for images, paths in iterate_images(expand_inputs(inputs, skipped), net.meta["resize"], batch_size, workers,
                                        f"features {layer}", progress, skipped):
        feats.append(net.features(images, layer).cpu().numpy())
        kept += paths
    if not feats:
        raise AlexNetError(f"none of the {len(inputs)} input(s) held a readable image")
    return Features(np.concatenate(feats), kept, layer)


def save_features(path: str | Path, features: Features, weights: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.features, paths=np.asarray(features.paths, dtype=str),
                     layer=np.asarray(features.layer), weights=np.asarray(str(weights)))

    atomic_write(path, write)


def load_features(path: str | Path) -> Features:
    try:
        with np.load(path, allow_pickle=False) as z:
            return Features(z["features"], [str(p) for p in z["paths"]], str(z["layer"]))
    except (OSError, ValueError, KeyError) as e:
        raise AlexNetError(f"{path} is not a features file written by alexnet features ({e})") from None


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the k nearest gallery rows for each query row."""
    q = torch.from_numpy(queries).double()
    g = torch.from_numpy(gallery).double()
    d = torch.cdist(q, g)
    dist, idx = d.topk(min(k, g.shape[0]), dim=1, largest=False)
    return idx.numpy(), dist.numpy()


def _thumbnail(path: str, size: int):
    """The image as a tile; a light grey one when it can no longer be read (a gallery saved
    with ``alexnet features`` may name files since moved)."""
    from PIL import Image

    try:
        return Image.fromarray(load_image(path, size).permute(1, 2, 0).numpy())
    except UnreadableImage:
        return Image.new("RGB", (size, size), (200, 200, 200))


def neighbor_grid(query_paths: list[str], neighbor_paths: list[list[str]], out: str | Path, thumb: int = 96) -> None:
    """A PNG: one row per query, the query first, then its neighbours left to right."""
    from PIL import Image, ImageDraw

    cols = 1 + max(len(n) for n in neighbor_paths)
    pad = 4
    grid = Image.new("RGB", (cols * (thumb + pad) + pad, len(query_paths) * (thumb + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r, (q, ns) in enumerate(zip(query_paths, neighbor_paths)):
        for c, path in enumerate([q, *ns]):
            tile = _thumbnail(path, thumb)
            x, y = pad + c * (thumb + pad), pad + r * (thumb + pad)
            grid.paste(tile, (x, y))
            if c == 0:
                draw.rectangle([x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=(220, 30, 30), width=2)
    atomic_write(out, lambda tmp: grid.save(tmp, format="PNG"))


def neighbors(weights: str | Path, queries: list[str], gallery: list[str], k: int = 6, layer: str | None = None,
              out: str | Path = "neighbors.png", device: str = "auto", progress: bool = True,
              skipped: list[str] | None = None) -> list[dict]:
    """For each query image, the k gallery images nearest in ``layer`` space (the paper's Fig. 4;
    default: the gallery file's layer, else the last hidden layer). Unreadable queries and
    gallery images are skipped, named on stderr and added to ``skipped``."""
    output_file(out)  # before the work, not after it
    if len(gallery) == 1 and str(gallery[0]).endswith(".npz"):
        g_feats, g_paths, g_layer = load_features(gallery[0])
        if layer not in (None, g_layer):
            raise AlexNetError(f"{gallery[0]} holds {g_layer} features; the queries must be compared in the same "
                               f"layer (drop --layer {layer})")
        layer = g_layer
    else:
        g_feats, g_paths, layer = extract_features(weights, gallery, layer, device=device, progress=progress,
                                                   skipped=skipped)
    q_feats, q_paths, _ = extract_features(weights, queries, layer, device=device, progress=progress,
                                           skipped=skipped)
    idx, dist = nearest(q_feats, g_feats, k + 1)
    results = []
    for qi, qp in enumerate(q_paths):
        pairs = [(g_paths[j], float(d)) for j, d in zip(idx[qi], dist[qi])
                 if os.path.abspath(g_paths[j]) != os.path.abspath(qp)][:k]  # a query is not its own neighbour
        results.append({"query": qp, "neighbors": [{"path": p, "distance": d} for p, d in pairs]})
    neighbor_grid([r["query"] for r in results], [[n["path"] for n in r["neighbors"]] for r in results], out)
    return [{"query": printable(r["query"]),
             "neighbors": [{**n, "path": printable(n["path"])} for n in r["neighbors"]]} for r in results]
