"""A per-layer table: output shape, parameters and multiply-accumulates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .models import AlexNet


@dataclass
class LayerRow:
    name: str
    kind: str
    output: tuple[int, ...]  # without the batch dimension
    params: int
    macs: int


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
    for name, module in model.named_modules():
        if name and not list(module.children()):
            def hook(mod, _inp, out, name=name):
                rows.append(LayerRow(name, type(mod).__name__, tuple(out.shape[1:]),
                                     sum(p.numel() for p in mod.parameters()), layer_macs(mod, out)))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    model._fc6_first = False  # the plain fc6 (its folded small-input form would skip fc6's row)
    try:
        device = next(model.parameters()).device
        channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        model(torch.zeros(1, channels, size, size, device=device))
    finally:
        for h in hooks:
            h.remove()
        del model._fc6_first
        model.train(was_training)
    return rows


def format_table(rows: list[LayerRow], title: str) -> str:
    lines = [title, f"{'layer':<22}{'type':<20}{'output':>18}{'params':>14}{'MACs':>16}"]
    lines.append("-" * len(lines[1]))
    for r in rows:
        shape = "x".join(str(s) for s in r.output)
        lines.append(f"{r.name:<22}{r.kind:<20}{shape:>18}{r.params:>14,}{r.macs:>16,}")
    lines.append("-" * len(lines[1]))
    total_p, total_m = sum(r.params for r in rows), sum(r.macs for r in rows)
    lines.append(f"{'total':<60}{total_p:>14,}{total_m:>16,}")
    lines.append(f"{total_p / 1e6:.3f}M parameters, {total_m / 1e9:.3f} GMAC per image forward")
    return "\n".join(lines)
