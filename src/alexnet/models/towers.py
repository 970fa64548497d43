"""The paper's model-parallel split: the two towers of the ``paper`` network on two devices.

Section 3.2 of the paper: each GPU holds half of every layer's kernels (48/128/192/192/128
convolution kernels, 2048/2048 fully connected units) and the GPUs talk only at certain
layers. Here that is written out as the paper's Figure 2 draws it:

    tower t (on devices[t])                          exchange
    conv1 (48) -> relu -> norm1 -> pool1             norm1: 2 edge channels (see below)
    conv2 (128, own maps) -> relu -> norm2 -> pool2  norm2: 2 edge channels
    conv3 (192, both towers' maps) -> relu           all of pool2 from the other tower
    conv4 (192, own maps) -> relu
    conv5 (128, own maps) -> relu -> pool5
    fc6 (2048, both towers) -> relu -> dropout       all of pool5 from the other tower
    fc7 (2048, both towers) -> relu -> dropout       all of fc6 from the other tower
    fc8 (half the classes, both towers)              all of fc7; the logits meet on devices[0]

Every exchange is a differentiable copy between devices, so autograd carries the
gradients back across. The arithmetic is that of the single-device ``PaperAlexNet``
(whose grouped convolutions are exactly these towers), and ``state_dict`` speaks the
single-device layout: a checkpoint from a split run loads anywhere, and any ``paper``
weights can be split.

Local response normalisation runs over 5 adjacent channels. With ``lrn_span='all'`` (the
default, as Caffe's ``bvlc_alexnet`` does over all 96/256 maps) the window reaches 2
channels into the other tower at the boundary, so each tower receives those 2 channels
("halo") before normalising; without them a split network would compute a different
function from the weights it was given. With ``lrn_span='tower'`` each tower normalises
its own maps, as each GPU did in the two-GPU network, and nothing crosses.

DistributedDataParallel accepts modules spanning several devices, so the split composes with
data parallelism: one process per pair of devices. That is tested on the CPU (two gloo
processes, each with both towers on 'cpu'); on GPUs the split has run on one device
(cuda:0,cuda:0), not yet on two GPUs or under NCCL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AlexNetError
from .dropout import Dropout
from .lrn import LocalResponseNorm
from .alexnet import PaperAlexNet, fc6_on_pool5

# The layers with weights, by their single-device names. Each single-device weight is the two
# towers' weights stacked on dim 0 (outputs): for the grouped convolutions (conv2, conv4,
# conv5) the groups are the towers, and the other layers take both towers' maps as input.
_LAYERS = PaperAlexNet.LAYERS


class Tower(nn.Module):
    """One tower's half of every layer (shapes for a 227x227 input)."""

    def __init__(self, num_classes: int, dropout: float, lrn: bool, lrn_k: float, grid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 48, kernel_size=11, stride=4)                 # (B, 48, 55, 55)
        self.conv2 = nn.Conv2d(48, 128, kernel_size=5, padding=2)               # (B, 128, 27, 27)
        self.conv3 = nn.Conv2d(256, 192, kernel_size=3, padding=1)              # both towers in
        self.conv4 = nn.Conv2d(192, 192, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(192, 128, kernel_size=3, padding=1)              # (B, 128, 13, 13)
        self.fc6 = nn.Linear(256 * grid * grid, 2048)                          # pool5 of both towers
        self.fc7 = nn.Linear(4096, 2048)
        self.fc8 = nn.Linear(4096, num_classes)
        self.norm = LocalResponseNorm(k=lrn_k) if lrn else None
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))                       # (B, 256, 6, 6) at 227 px
        self.drop = Dropout(dropout)


class TwoTowerAlexNet(nn.Module):
    """``PaperAlexNet`` with tower t on ``devices[t]``; input on any device, logits on ``devices[0]``."""

    def __init__(self, model: PaperAlexNet, devices: tuple[torch.device, torch.device]) -> None:
        super().__init__()
        if type(model) is not PaperAlexNet or not model.is_standard():
            raise AlexNetError("the two-tower split is defined for the 'paper' network with ReLU, overlapping "
                               "floor-rounded pooling and LRN (or none)")
        self._options = model.options()
        self.lrn_span = self._options["lrn_span"]
        self.devices = tuple(torch.device(d) for d in devices)
        self._classes = model.num_classes
        halves = torch.tensor_split(torch.arange(self._classes), 2)
        self.towers = nn.ModuleList(
            Tower(len(h), self._options["dropout"], self._options["norm"] == "lrn", self._options["lrn_k"],
                  self._options["pool5_grid"]) for h in halves)
        self.register_state_dict_post_hook(_merge_state)
        self.register_load_state_dict_pre_hook(_split_state)
        self.load_state_dict(model.state_dict())
        for t, device in enumerate(self.devices):
            self.towers[t].to(device)
        source = dict(model.named_parameters())
        for name, p in self._split_parameters():  # frozen layers (fine-tuning) stay frozen
            p.requires_grad_(source[name].requires_grad)

    @property
    def num_classes(self) -> int:
        return self._classes

    def options(self) -> dict:
        return dict(self._options)

    def head_parameters(self):
        """fc8, both halves: the layer ``--head-lr-mult`` and ``--freeze all-but-fc8`` single out."""
        return [p for tower in self.towers for p in tower.fc8.parameters()]

    def _split_parameters(self):
        """(single-device name, tower parameter) for every parameter of both towers."""
        for tower in self.towers:
            for layer in _LAYERS:
                for kind in ("weight", "bias"):
                    yield f"{layer}.{kind}", getattr(getattr(tower, layer.split(".")[1]), kind)

    def _lrn(self, a: list[torch.Tensor]) -> list[torch.Tensor]:
        """norm1/norm2. Over all maps (``lrn_span`` 'all'): each tower borrows the other's
        edge channels that fall inside its windows, normalises, and keeps its own. Within
        each tower ('tower', the two-GPU network of 2012): each normalises alone."""
        n0, n1 = self.towers[0].norm, self.towers[1].norm
        if n0 is None:
            return a
        if self.lrn_span == "tower":
            return [n0(a[0]), n1(a[1])]
        before, after = n0.size // 2, (n0.size - 1) // 2  # the window [c - before, c + after]
        d0, d1 = self.devices
        a0 = n0(torch.cat([a[0], a[1][:, :after].to(d0)], 1))[:, :a[0].shape[1]]
        a1 = n1(torch.cat([a[0][:, a[0].shape[1] - before:].to(d1), a[1]], 1))[:, before:]
        return [a0, a1]

    def _both(self, a: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tower receives the other's activations: the paper's cross-GPU connections."""
        return [torch.cat([a[0].to(d), a[1].to(d)], 1) for d in self.devices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.towers
        a = [F.relu(t[i].conv1(x.to(d))) for i, d in enumerate(self.devices)]   # (B, 48, 55, 55) each
        a = [t[i].pool(y) for i, y in enumerate(self._lrn(a))]                  # (B, 48, 27, 27)
        a = [F.relu(t[i].conv2(y)) for i, y in enumerate(a)]                    # own maps only
        a = [t[i].pool(y) for i, y in enumerate(self._lrn(a))]                  # (B, 128, 13, 13)
        a = [F.relu(t[i].conv3(y)) for i, y in enumerate(self._both(a))]        # conv3 crosses towers
        a = [F.relu(t[i].conv4(y)) for i, y in enumerate(a)]
        a = [t[i].pool(F.relu(t[i].conv5(y))) for i, y in enumerate(a)]         # (B, 128, 6, 6)
        h = [t[i].drop(F.relu(fc6_on_pool5(t[i].fc6, t[i].avgpool, y)))         # (B, 2048): fc6 crosses
             for i, y in enumerate(self._both(a))]
        h = [t[i].drop(F.relu(t[i].fc7(y))) for i, y in enumerate(self._both(h))]
        logits = [t[i].fc8(y) for i, y in enumerate(self._both(h))]             # half the classes each
        return torch.cat([logits[0], logits[1].to(self.devices[0])], 1)

    def to_single(self) -> PaperAlexNet:
        """The same weights as one single-device ``PaperAlexNet`` (on the CPU)."""
        model = PaperAlexNet(self._classes, init="torchvision", **self._options)
        model.load_state_dict({k: v.cpu() for k, v in self.state_dict().items()})
        return model


def _merge_state(module: TwoTowerAlexNet, state: dict, prefix: str, local_metadata) -> None:
    """state_dict hook: the towers' halves become the single-device layout's tensors."""
    for layer in _LAYERS:
        attr = layer.split(".")[1]
        for kind in ("weight", "bias"):
            parts = [state.pop(f"{prefix}towers.{t}.{attr}.{kind}") for t in (0, 1)]
            state[f"{prefix}{layer}.{kind}"] = torch.cat([p.to(parts[0].device) for p in parts], 0)


def _split_state(module: TwoTowerAlexNet, state: dict, prefix: str, local_metadata, strict, missing_keys,
                 unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: single-device tensors are cut into the towers' halves."""
    for layer in _LAYERS:
        attr = layer.split(".")[1]
        for kind in ("weight", "bias"):
            key = f"{prefix}{layer}.{kind}"
            if key not in state:
                continue  # reported as missing by load_state_dict
            full = state.pop(key)
            sizes = [getattr(module.towers[t], attr).weight.shape[0] for t in (0, 1)]
            if full.shape[0] != sum(sizes):
                error_msgs.append(f"{key}: {full.shape[0]} outputs, expected {sum(sizes)}")
                continue
            for t, part in enumerate(torch.split(full, sizes, 0)):
                state[f"{prefix}towers.{t}.{attr}.{kind}"] = part


def resolve_devices(spec: str, local_rank: int = 0, world: int = 1) -> tuple[torch.device, torch.device]:
    """``--model-parallel``: 'auto' (cuda:2r and cuda:2r+1 for local rank r) or 'DEV0,DEV1'
    (under torchrun only CPUs: named GPUs would be every process's same two)."""
    if spec == "auto":
        need = 2 * local_rank + 2
        if not torch.cuda.is_available() or torch.cuda.device_count() < need:
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise AlexNetError(f"--model-parallel auto needs {need} CUDA devices for local rank {local_rank}, "
                               f"found {have}; name two devices instead, e.g. --model-parallel cpu,cpu")
        return torch.device(f"cuda:{2 * local_rank}"), torch.device(f"cuda:{2 * local_rank + 1}")
    names = spec.split(",")
    try:
        if len(names) != 2:
            raise ValueError
        devices = tuple(torch.device(n.strip()) for n in names)
    except (RuntimeError, ValueError):
        raise AlexNetError(f"--model-parallel takes 'auto' or two devices such as 'cuda:0,cuda:1', got {spec!r}") from None
    if world > 1 and any(d.type == "cuda" for d in devices):
        raise AlexNetError(f"--model-parallel {spec} under torchrun would put every process on the same GPUs; "
                           "use --model-parallel auto (process r takes cuda:2r and cuda:2r+1)")
    for d in devices:
        if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
            raise AlexNetError(f"--model-parallel names {d}, which this machine does not have")
    return devices
