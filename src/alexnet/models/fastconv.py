"""Other ways to compute the same layers, chosen per device for speed: the towers' grouped
convolutions as two dense halves, conv1 by space-to-depth, and max pooling as an operator
that ``torch.compile`` leaves alone.

Both keep the module's parameters (the same ``weight`` and ``bias`` objects, of the same
shapes), so state dicts, checkpoints, imports and the two-device split see no difference;
only ``forward`` changes. ``use(model, towers=..., conv1=...)`` swaps them in place.

``split``: a ``groups=2`` convolution as two ordinary convolutions over the two halves of
the channels, concatenated: cuDNN falls back to slower kernels for some grouped shapes in
channels-last half precision (the weight gradient especially), and dense ones use tensor
cores.

``s2d``: conv1 (11x11, stride 4, three input channels, which leave tensor cores idle) as a
3x3 stride-1 convolution over 4x4 blocks of the input folded into 48 channels
(``pixel_unshuffle``), with the kernel zero-padded to 12x12 and folded the same way. Exact:
every output sums the same products.

``opaque`` pools: max pooling through ``alexnet::max_pool2d``, a registered operator whose
forward and backward are PyTorch's own native kernels. ``torch.compile`` cannot
look inside it, so it keeps them rather than generate its own pooling backward (recent
inductor versions scatter-add it, which may be why compiling made torchvision's network
slower on an H100). Exact: the same kernels run.

``triton`` pools: max pooling by ``pool_triton``'s kernels (an int8 place for each maximum, a
backward that gathers rather than zero-fills and scatters), also an operator that compile keeps;
on CUDA (or under ``TRITON_INTERPRET=1``), PyTorch's pooling elsewhere. Exact: the same maxima,
the same places, the gradients summed in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TOWER_IMPLS = ("grouped", "split")
CONV1_IMPLS = ("direct", "s2d")
POOL_IMPLS = ("native", "opaque", "triton")

# What 'auto' picks: the choices benchmarks/gpu_profile.py measured faster (bf16, channels-last, a
# whole training step at batch 256 and 512) on an NVIDIA H200 with PyTorch 2.11 (docs/benchmarks.md,
# 2026-11-26 and 2026-11-27); everything not listed keeps the plain computation, which is also what
# no measurement has beaten on a CPU. The towers stay grouped: two dense halves were 0.1-1.5 ms
# slower a step at batch 256 and 0.2-0.4 ms faster at 512. Keys: (variant, device type, mode):
# the step run eagerly, compiled, or eagerly and replayed from a CUDA graph (``--cuda-graphs``).
MODES = ("eager", "compiled", "graphed")
MEASURED_FASTER = {
    # conv1 by space-to-depth (2026-11-27): 9.63 against 11.74 ms a step at batch 256 with the band
    # LRN kernels, 17.61 against 21.66 at 512; again in the afternoon, 10.11 against 11.82 and
    # 17.68 against 21.69.
    # Pools stay PyTorch's eagerly, not measured faster at batch 256: the Triton pools' step 9.31
    # against 9.74 ms (17:08), then 12.35, 9.31, 10.33, 10.10 against 9.69, 10.08, 9.66, 10.32
    # (19:17-19:27), medians 10.10 against 9.74; faster at 512 (15.13 against 17.69). The eager
    # step at 256 waits for its host, and the Triton pools cost the host more a call
    # (benchmarks/host_cost.py). Graphed, where the host costs nothing, they won every time.
    ("paper", "cuda", "eager"): {"conv1": "s2d"},
    # compiled, with the band LRN kernels: 8.97 against 10.97 ms at batch 256 (2026-11-27, afternoon)
    # Pools stay native: the Triton pools 9.66 against 8.70 ms (17:08), 8.04 against 9.19 (19:20)
    ("paper", "cuda", "compiled"): {"conv1": "s2d"},
    # graphed, s2d and band LRN: Triton pools 8.16, 8.11, 8.17, 8.10 ms against 9.34, 9.42, 9.45,
    # 9.37 (batch 256, 2026-11-27, 19:17-19:27), peak memory 1.59 against 2.02 GiB
    ("paper", "cuda", "graphed"): {"conv1": "s2d", "pools": "triton"},
    # 6.13 against 7.21 ms at batch 256, 10.16 against 12.50 at 512 (2026-11-27).
    # Pools: Triton 5.79 against 6.21 ms (17:08), then 6.66, 6.76, 6.94, 6.91 against 6.51, 6.12,
    # 6.68, 6.17 (19:17-19:27); at 512 8.63 against 10.09
    ("torchvision", "cuda", "eager"): {"conv1": "s2d"},
    # compiled: s2d 6.51 ms against 8.37 (2026-11-26); 5.68 on 2026-11-27's afternoon, against
    # 6.59 direct that morning (two sessions: direct was not compiled in the afternoon's)
    # Pools stay native compiled: opaque ones were faster on 2026-11-26 (7.35 against 8.37 ms,
    # conv1 direct), slower on 2026-11-27's morning (7.17 against 6.59), level in its afternoon
    # (5.61 against 5.68 ms with s2d) and faster at 16:45 (5.30 against 6.38) but slower at 17:08
    # (6.35 against 5.31) and at 19:20 (6.10 against 5.65); the Triton pools 6.36 against 5.31
    # (17:08), 5.92 against 5.65 (19:20)
    ("torchvision", "cuda", "compiled"): {"conv1": "s2d"},
    # graphed, s2d: Triton pools 4.77, 4.78, 4.74, 4.78 ms against 5.74, 5.73, 5.80, 5.75 (batch
    # 256, 2026-11-27, 19:17-19:27), 1.48 against 1.63 GiB
    ("torchvision", "cuda", "graphed"): {"conv1": "s2d", "pools": "triton"},
}
PLAIN = {"towers": "grouped", "conv1": "direct", "pools": "native"}


def mode(compiled: bool, graphed: bool = False) -> str:
    """``MEASURED_FASTER``'s mode of a training step: compiled (whether graphed or not: no compiled
    step has been measured graphed), else graphed, else eager."""
    return "compiled" if compiled else "graphed" if graphed else "eager"


def resolve(variant: str, device_type: str, step_mode: str, towers: str = "auto", conv1: str = "auto",
            pools: str = "auto", channels_last: bool = True) -> dict[str, str]:
    """``use``'s arguments with each 'auto' replaced by the choice measured faster for this
    network, device and mode (``MEASURED_FASTER``, all measured channels-last), else the plain
    computation."""
    if step_mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {step_mode!r}")
    faster = MEASURED_FASTER.get((variant, device_type, step_mode), {}) if channels_last else {}
    measured = {**PLAIN, **faster}
    given = {"towers": towers, "conv1": conv1, "pools": pools}
    return {k: measured[k] if v == "auto" else v for k, v in given.items()}


def _pool_args(k: int, s: int, p: int, ceil: bool) -> tuple:
    return [k, k], [s, s], [p, p], [1, 1], ceil


@torch.library.custom_op("alexnet::max_pool2d", mutates_args=())
def max_pool2d(x: torch.Tensor, k: int, s: int, p: int, ceil: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, indices) of a k x k max pool with stride s and padding p: PyTorch's kernel."""
    out, idx = torch.ops.aten.max_pool2d_with_indices(x, *_pool_args(k, s, p, ceil))
    return out, idx


@max_pool2d.register_fake
def _(x, k, s, p, ceil):
    return torch.ops.aten.max_pool2d_with_indices(x, *_pool_args(k, s, p, ceil))


@torch.library.custom_op("alexnet::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(grad: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, k: int, s: int, p: int,
                        ceil: bool) -> torch.Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *_pool_args(k, s, p, ceil), idx)


@max_pool2d_backward.register_fake
def _(grad, x, idx, k, s, p, ceil):
    return torch.empty_like(x)


def _pool_setup(ctx, inputs, output):
    x, k, s, p, ceil = inputs
    ctx.save_for_backward(x, output[1])
    ctx.args = (k, s, p, ceil)
    ctx.mark_non_differentiable(output[1])


def _pool_backward(ctx, grad, _):
    x, idx = ctx.saved_tensors
    return max_pool2d_backward(grad, x, idx, *ctx.args), None, None, None, None


max_pool2d.register_autograd(_pool_backward, setup_context=_pool_setup)


class OpaqueMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d through ``alexnet::max_pool2d`` (square windows, no dilation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, _int(self.kernel_size), _int(self.stride), _int(self.padding), self.ceil_mode)[0]


class TritonMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d by ``pool_triton``'s kernels where they run (CUDA, or any device under
    ``TRITON_INTERPRET=1``), PyTorch's own elsewhere (square windows, no dilation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from . import pool_triton

        k, s, p = _int(self.kernel_size), _int(self.stride), _int(self.padding)
        if not (pool_triton.runs_on(x) and pool_triton.supports(x, k, s, p, self.ceil_mode)):
            return super().forward(x)
        return pool_triton.max_pool2d(x, k, s, p, self.ceil_mode)


def _int(v) -> int:
    return v if isinstance(v, int) else v[0]


def _square(pool: nn.MaxPool2d) -> bool:
    """A pool the other forms take: the same window, stride and padding along both axes, no
    dilation (a rectangular one keeps nn.MaxPool2d)."""
    pairs = [v if isinstance(v, (tuple, list)) else (v, v) for v in (pool.kernel_size, pool.stride, pool.padding)]
    dilation = pool.dilation if isinstance(pool.dilation, (tuple, list)) else (pool.dilation,) * 2
    return all(a == b for a, b in pairs) and tuple(dilation) == (1, 1) and not pool.return_indices


class SplitConv2d(nn.Conv2d):
    """A grouped convolution computed group by group as dense convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        xs = x.chunk(g, dim=1)
        ws = self.weight.chunk(g, dim=0)
        bs = self.bias.chunk(g) if self.bias is not None else (None,) * g
        return torch.cat([F.conv2d(xi, wi, bi, self.stride, self.padding, self.dilation)
                          for xi, wi, bi in zip(xs, ws, bs)], dim=1)


class SpaceToDepthConv2d(nn.Conv2d):
    """A strided convolution as a stride-1 one over ``stride`` x ``stride`` blocks of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, (kh, kw), (ph, pw) = self.stride[0], self.kernel_size, self.padding
        blocks_h, blocks_w = -(-kh // s), -(-kw // s)  # the kernel in blocks, rounded up (11 -> 3 of 4)
        out_h = (x.shape[2] + 2 * ph - kh) // s + 1
        out_w = (x.shape[3] + 2 * pw - kw) // s + 1
        need_h, need_w = s * (out_h - 1 + blocks_h), s * (out_w - 1 + blocks_w)
        # zero padding before (the layer's own) and after (to whole blocks); pixels the
        # convolution never reads are cut (negative padding)
        x = F.pad(x, (pw, need_w - x.shape[3] - pw, ph, need_h - x.shape[2] - ph))
        fmt = _memory_format(x)
        folded = _unshuffle(x, s, fmt)  # (B, C * s * s, need / s, need / s)
        return F.conv2d(folded, self.folded_weight().contiguous(memory_format=fmt), self.bias)

    def folded_weight(self) -> torch.Tensor:
        """(out, C, kh, kw) zero-padded to whole blocks, as (out, C * s * s, blocks_h, blocks_w)
        with pixel_unshuffle's channel order (c, row in block, column in block)."""
        s, (kh, kw) = self.stride[0], self.kernel_size
        bh, bw = -(-kh // s), -(-kw // s)
        w = F.pad(self.weight, (0, bw * s - kw, 0, bh * s - kh))
        o, c = w.shape[:2]
        return w.view(o, c, bh, s, bw, s).permute(0, 1, 3, 5, 2, 4).reshape(o, c * s * s, bh, bw)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last where ``x`` is stored so (and not also contiguous), else contiguous."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _unshuffle(x: torch.Tensor, s: int, fmt: torch.memory_format) -> torch.Tensor:
    """``pixel_unshuffle(x, s)`` stored in ``fmt``, in one copy. PyTorch's own keeps channels-last
    on the CPU but not on CUDA, where the convolution, the LRN kernels and every layer after
    them then ran in NCHW (found by benchmarks/gpu_profile.py on an H200, 2026-11-26)."""
    if fmt != torch.channels_last:
        return F.pixel_unshuffle(x, s)
    b, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1).view(b, h // s, s, w // s, s, c)  # memory order already
    folded = nhwc.permute(0, 1, 3, 5, 2, 4).reshape(b, h // s, w // s, c * s * s)  # channel: c, row, column
    return folded.permute(0, 3, 1, 2)


def _swap(parent: nn.Module, name: str, conv: nn.Conv2d, cls: type) -> None:
    """Replace ``parent.name`` with a ``cls`` holding the same parameters."""
    if type(conv) is cls:
        return
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
              conv.groups, conv.bias is not None, device="meta")
    new.weight, new.bias = conv.weight, conv.bias
    new.train(conv.training)
    setattr(parent, name, new)


def use(model: nn.Module, towers: str = "grouped", conv1: str = "direct", pools: str = "native") -> nn.Module:
    """Compute ``model``'s grouped convolutions as ``towers`` ('grouped' or 'split'), its first
    strided convolution as ``conv1`` ('direct' or 's2d') and its max pools as ``pools``
    ('native', 'opaque' or 'triton'); in place, parameters kept."""
    if towers not in TOWER_IMPLS:
        raise ValueError(f"towers must be one of {TOWER_IMPLS}, got {towers!r}")
    if conv1 not in CONV1_IMPLS:
        raise ValueError(f"conv1 must be one of {CONV1_IMPLS}, got {conv1!r}")
    if pools not in POOL_IMPLS:
        raise ValueError(f"pools must be one of {POOL_IMPLS}, got {pools!r}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and _reads_the_image(child):  # conv1, or each tower's
                _swap(parent, name, child, SpaceToDepthConv2d if conv1 == "s2d" else nn.Conv2d)
            elif isinstance(child, nn.Conv2d) and child.groups > 1:
                _swap(parent, name, child, SplitConv2d if towers == "split" else nn.Conv2d)
            elif isinstance(child, nn.MaxPool2d) and _square(child):
                cls = {"opaque": OpaqueMaxPool2d, "triton": TritonMaxPool2d}.get(pools, nn.MaxPool2d)
                if type(child) is not cls:
                    setattr(parent, name, cls(child.kernel_size, child.stride, child.padding,
                                              ceil_mode=child.ceil_mode))
    return model


def _reads_the_image(conv: nn.Conv2d) -> bool:
    """A strided convolution over a few input channels (an image's): where space-to-depth pays."""
    return conv.in_channels <= 4 and conv.groups == 1 and conv.stride[0] > 1 and conv.stride[0] == conv.stride[1] \
        and conv.dilation == (1, 1)
