"""A per-layer table: output shape, parameters, multiply-accumulates, and each layer's
receptive field on the input (its size and stride), worked out from the layers themselves:
a layer of kernel k and stride s makes the field k - 1 input strides wider and multiplies the
stride by s; layers that read the whole map (fully connected, a pool to another grid) see the
whole image. And conv1's kernels drawn as one picture (the paper's Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .alexnet import AlexNet, plain_fc6


@dataclass
class LayerRow:
    name: str
    kind: str
    output: tuple[int, ...]  # without the batch dimension
    params: int
    macs: int
    field: int | None = None  # receptive field on the input, in pixels (None: the whole image)
    field_stride: int | None = None  # input pixels between neighbouring outputs (None: one output)


def layer_window(module: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of a layer that slides a window over the map; None for one
    that does not move the field (elementwise, normalisation across channels) or reads
    everything."""
    from .convnet import LocallyConnected2d, WithinMapNorm

    def first(v) -> int:
        return v if isinstance(v, int) else v[0]

    if isinstance(module, LocallyConnected2d):
        return module.kernel_size, 1, module.padding
    if isinstance(module, WithinMapNorm):  # cuda-convnet's rnorm: a size x size window in each map
        return module.size, 1, module.size // 2
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return first(module.kernel_size), first(module.stride), first(module.padding)
    return None


class Field:
    """The receptive field so far, updated layer by layer in the order the input flows: unit
    (i, j) sees input rows ``start + i * stride`` to ``+ size`` (and the same for columns)."""

    def __init__(self) -> None:
        self.size, self.stride, self.start = 1, 1, 0  # a pixel of the input

    def slide(self, window: tuple[int, int, int]) -> None:
        """Through a layer of (kernel, stride, padding): k - 1 strides wider, the stride times
        s, the start moved back by the padding."""
        k, s, pad = window
        self.start -= pad * self.stride
        self.size += (k - 1) * self.stride
        self.stride *= s

    def step(self, module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int | None, int | None]:
        window = layer_window(module)
        if window is not None and self.size is not None:
            self.slide(window)
        elif isinstance(module, (nn.Linear, nn.Flatten)) or (
                isinstance(module, nn.AdaptiveAvgPool2d) and tuple(out.shape[-2:]) != tuple(inp.shape[-2:])):
            self.size = self.stride = None  # every output reads the whole map
        return self.size, self.stride


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one image through ``module`` (convolutions, locally connected and
    linear layers)."""
    from .convnet import LocallyConnected2d

    if isinstance(module, LocallyConnected2d):
        return module.weight.numel()  # one multiply-accumulate per weight at its own position
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


@torch.no_grad()
def summarize(model: AlexNet, input_size: int | None = None) -> list[LayerRow]:
    size = input_size or model.info.input_size
    rows: list[LayerRow] = []
    hooks = []
    field = Field()
    for name, module in model.named_modules():
        if name and not list(module.children()):
            def hook(mod, inp, out, name=name):
                size, stride = field.step(mod, inp[0], out)
                rows.append(LayerRow(name, type(mod).__name__, tuple(out.shape[1:]),
                                     sum(p.numel() for p in mod.parameters()), layer_macs(mod, out), size, stride))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        with plain_fc6(model):  # its folded small-input form would skip fc6's row
            model(torch.zeros(1, channels, size, size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def format_table(rows: list[LayerRow], title: str) -> str:
    lines = [title, f"{'layer':<22}{'type':<20}{'output':>18}{'params':>14}{'MACs':>16}{'field':>8}{'stride':>8}"]
    lines.append("-" * len(lines[1]))
    for r in rows:
        shape = "x".join(str(s) for s in r.output)
        field = "all" if r.field is None else str(r.field)
        stride = "-" if r.field_stride is None else str(r.field_stride)
        lines.append(f"{r.name:<22}{r.kind:<20}{shape:>18}{r.params:>14,}{r.macs:>16,}{field:>8}{stride:>8}")
    lines.append("-" * len(lines[1]))
    total_p, total_m = sum(r.params for r in rows), sum(r.macs for r in rows)
    lines.append(f"{'total':<60}{total_p:>14,}{total_m:>16,}")
    lines.append(f"{total_p / 1e6:.3f}M parameters, {total_m / 1e9:.3f} GMAC per image forward")
    return "\n".join(lines)


def kernel_grid(weight: torch.Tensor, columns: int = 16, scale: int = 4, pad: int = 2) -> np.ndarray:
    """RGB uint8 image of conv1 kernels (out, 3, k, k), each stretched to [0, 255] on its own.

    With the ``paper`` network's 96 kernels and 16 columns, the top three rows are
    tower 1 (kernels 0-47) and the bottom three tower 2, as in the paper's Fig. 3."""
    w = weight.detach().float().cpu()
    n, _, k, _ = w.shape
    rows = -(-n // columns)
    cell = k * scale + pad
    grid = np.full((rows * cell + pad, columns * cell + pad, 3), 255, np.uint8)
    for i in range(n):
        kern = w[i].permute(1, 2, 0).numpy()
        lo, hi = kern.min(), kern.max()
        kern = (kern - lo) / (hi - lo + 1e-12)
        tile = np.kron((kern * 255).astype(np.uint8), np.ones((scale, scale, 1), np.uint8))
        r, c = divmod(i, columns)
        grid[pad + r * cell: pad + r * cell + k * scale, pad + c * cell: pad + c * cell + k * scale] = tile
    return grid
