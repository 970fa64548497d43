"""Local response normalisation as two fused Triton kernels, forward and backward.

The formula is ``lrn.py``'s. Each program takes a tile of ``BLOCK_P`` pixel positions by all
the channels of one group (all maps, or one tower's), and sums each channel's window of
squares from ``size`` shifted loads of the tile, so one pass reads the input (the shifted
reads hit the cache) and writes the output and the denominator: against some 60 passes of
the unfused operations. Positions are addressed through the tensor's strides, so contiguous
(NCHW) and channels-last (NHWC) tensors both load whole rows: along the pixels in the first,
along the channels in the second. Arithmetic is fp32 whatever the input (fp16's range would
overflow in the squares at the paper's 0-255 input scale); outputs take the input's dtype.

Forward, per channel c of a group, window W(c) = [c - size//2, c + (size-1)//2] clipped to
the group:  d_c = k + alpha/n * sum_{j in W(c)} a_j^2,  b_c = a_c * d_c^-beta.
Backward (Caffe's): da_j = g_j d_j^-beta - (2 alpha beta / n) a_j sum_{c: j in W(c)} g_c a_c d_c^(-beta-1).

Only plain Triton (loads, stores, ``static_range``, ``exp2``/``log2``), so that the GPU
machine's older Triton compiles it; ``TRITON_INTERPRET=1`` runs the same kernels on the CPU,
which is how the suite checks them against an fp64 reference. ``lrn_forward`` and
``lrn_backward`` are registered as PyTorch operators (``alexnet::lrn``), which autograd
differentiates and ``torch.compile`` keeps as single operations; eager calls run the same
functions through a plain autograd.Function, without the operators' dispatch.
"""

from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable
from torch.utils import _python_dispatch

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU-only install without Triton: lrn.py keeps its PyTorch path
    triton = None

BLOCK_P = 16  # pixel positions per program; the channel tile is the group's width, rounded up to a power of 2


def available() -> bool:
    return triton is not None


if triton is not None:
    @triton.jit
    def _positions(pid, P, HW, W, sN, sH, sW, BLOCK: tl.constexpr):
        p = pid * BLOCK + tl.arange(0, BLOCK)
        n = p // HW
        hw = p % HW
        return n * sN + (hw // W) * sH + (hw % W) * sW, p < P

    @triton.jit
    def _lrn_fwd(x_ptr, y_ptr, d_ptr, P, HW, W, sN, sC, sH, sW, Cg, alpha_n, beta, k,
                 SIZE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        base, mask_p = _positions(tl.program_id(0), P, HW, W, sN, sH, sW, BLOCK_P)
        c = tl.arange(0, BLOCK_C)
        first = tl.program_id(1) * Cg  # the group's first channel
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for j in tl.static_range(SIZE):
            cc = c + (j - SIZE // 2)
            m = mask_p[:, None] & ((cc >= 0) & (cc < Cg))[None, :]
            v = tl.load(x_ptr + base[:, None] + (first + cc)[None, :] * sC, mask=m, other=0.0).to(tl.float32)
            acc += v * v
        m = mask_p[:, None] & (c < Cg)[None, :]
        at = base[:, None] + (first + c)[None, :] * sC
        x = tl.load(x_ptr + at, mask=m, other=0.0).to(tl.float32)
        d = k + alpha_n * acc
        y = x * tl.exp2(-beta * tl.log2(d))
        tl.store(y_ptr + at, y.to(y_ptr.dtype.element_ty), mask=m)
        tl.store(d_ptr + at, d, mask=m)

    @triton.jit
    def _lrn_bwd(g_ptr, x_ptr, d_ptr, dx_ptr, P, HW, W, sN, sC, sH, sW, Cg, alpha_n, beta,
                 SIZE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        base, mask_p = _positions(tl.program_id(0), P, HW, W, sN, sH, sW, BLOCK_P)
        c = tl.arange(0, BLOCK_C)
        first = tl.program_id(1) * Cg
        spread = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for j in tl.static_range(SIZE):  # the channels whose window holds c: c - (SIZE-1)//2 .. c + SIZE//2
            cc = c + (j - (SIZE - 1) // 2)
            m = mask_p[:, None] & ((cc >= 0) & (cc < Cg))[None, :]
            at = base[:, None] + (first + cc)[None, :] * sC
            g = tl.load(g_ptr + at, mask=m, other=0.0).to(tl.float32)
            x = tl.load(x_ptr + at, mask=m, other=0.0).to(tl.float32)
            d = tl.load(d_ptr + at, mask=m, other=1.0)
            spread += g * x * tl.exp2((-beta - 1.0) * tl.log2(d))
        m = mask_p[:, None] & (c < Cg)[None, :]
        at = base[:, None] + (first + c)[None, :] * sC
        g = tl.load(g_ptr + at, mask=m, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + at, mask=m, other=0.0).to(tl.float32)
        d = tl.load(d_ptr + at, mask=m, other=1.0)
        dx = g * tl.exp2(-beta * tl.log2(d)) - 2.0 * alpha_n * beta * x * spread
        tl.store(dx_ptr + at, dx.to(dx_ptr.dtype.element_ty), mask=m)

    # The band kernels: the same formula with every tensor read once, by aligned loads: the
    # shifted loads above cannot be vectorised along the channels of a channels-last map, and
    # on an H200 (benchmarks/gpu_profile.py, 2026-11-26) those kernels took 8 to 24 times as
    # long as moving their fewest bytes would. A program takes BLOCK_P positions of one image
    # (whole rows, so no division in the addresses: for both dense formats position hw of
    # image n is at n*sN + hw*sW) and walks the group's channels in chunks of TC; a chunk's
    # window sums are products with three TC x TC 0/1 band blocks, against the chunks before,
    # at and after it, on the tensor cores. The backward recomputes the denominator from the
    # input rather than read a stored fp32 one, two chunks ahead of the gradient it writes.
    # The number of chunks, CHUNKS, is a constant of the launch: Triton 3.6's interpreter cannot
    # take a loop bound computed from an argument under NumPy 2.4 and later (triton-lang/triton
    # issue 9171), and the paper's maps need only a few values.

    @triton.jit
    def _band(TC: tl.constexpr, OFFSET: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr):
        """B[j, c] = 1 where input channel OFFSET*TC + j lies in [c - LO, c + HI]: the block of the
        band that sums chunk i + OFFSET into chunk i's windows."""
        j = tl.arange(0, TC)[:, None] + OFFSET * TC
        c = tl.arange(0, TC)[None, :]
        return ((j >= c - LO) & (j <= c + HI)).to(tl.float32)

    @triton.jit
    def _window_sum(s, band):
        """s @ band to about fp32's precision in two tf32 products: the band's 0s and 1s are exact
        in tf32, so only ``s`` is split, into its tf32 part and the rest (relative error ~2^-20)."""
        hi = (s.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
        return tl.dot(hi, band, input_precision="tf32") + tl.dot(s - hi, band, input_precision="tf32")

    @triton.jit
    def _windows(before, at, after, LO: tl.constexpr, HI: tl.constexpr, TC: tl.constexpr):
        """Each channel's window sum of chunk i, from chunks i - 1, i and i + 1."""
        return (_window_sum(before, _band(TC, -1, LO, HI)) + _window_sum(at, _band(TC, 0, LO, HI))
                + _window_sum(after, _band(TC, 1, LO, HI)))

    @triton.jit
    def _rows(HW, sN, sW, BLOCK_P: tl.constexpr):
        """This program's positions: their offsets and which lie inside the image."""
        tiles = tl.cdiv(HW, BLOCK_P)
        hw = (tl.program_id(0) % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
        return (tl.program_id(0) // tiles) * sN + hw * sW, hw < HW

    @triton.jit
    def _chunk(row, inside, i, sC, Cg, TC: tl.constexpr):
        """Offsets and mask of chunk i of this program's group (empty outside the group)."""
        c = i * TC + tl.arange(0, TC)
        at = row[:, None] + (tl.program_id(1) * Cg + c)[None, :] * sC
        return at, inside[:, None] & ((c >= 0) & (c < Cg))[None, :]

    @triton.jit
    def _load(ptr, row, inside, i, sC, Cg, TC: tl.constexpr):
        at, m = _chunk(row, inside, i, sC, Cg, TC)
        return tl.load(ptr + at, mask=m, other=0.0).to(tl.float32)

    @triton.jit
    def _lrn_fwd_band(x_ptr, y_ptr, HW, sN, sC, sW, Cg, alpha_n, beta, k,
                      SIZE: tl.constexpr, BLOCK_P: tl.constexpr, TC: tl.constexpr, CHUNKS: tl.constexpr):
        LO: tl.constexpr = SIZE // 2
        HI: tl.constexpr = (SIZE - 1) // 2
        row, inside = _rows(HW, sN, sW, BLOCK_P)
        x = _load(x_ptr, row, inside, 0, sC, Cg, TC)
        sq_before, sq = tl.zeros([BLOCK_P, TC], dtype=tl.float32), x * x
        for i in range(0, CHUNKS):
            x_after = _load(x_ptr, row, inside, i + 1, sC, Cg, TC)
            sq_after = x_after * x_after
            d = k + alpha_n * _windows(sq_before, sq, sq_after, LO, HI, TC)
            at, m = _chunk(row, inside, i, sC, Cg, TC)
            tl.store(y_ptr + at, (x * tl.exp2(-beta * tl.log2(d))).to(y_ptr.dtype.element_ty), mask=m)
            sq_before, sq, x = sq, sq_after, x_after

    @triton.jit
    def _lrn_bwd_band(g_ptr, x_ptr, dx_ptr, HW, sN, sC, sW, Cg, alpha_n, beta, k,
                      SIZE: tl.constexpr, BLOCK_P: tl.constexpr, TC: tl.constexpr, CHUNKS: tl.constexpr):
        LO: tl.constexpr = SIZE // 2
        HI: tl.constexpr = (SIZE - 1) // 2
        row, inside = _rows(HW, sN, sW, BLOCK_P)
        zero = tl.zeros([BLOCK_P, TC], dtype=tl.float32)
        # chunk i's: x, g, d^-beta and t = g x d^(-beta-1); chunk i + 1's x, g and square
        x, g = _load(x_ptr, row, inside, 0, sC, Cg, TC), _load(g_ptr, row, inside, 0, sC, Cg, TC)
        x1, g1 = _load(x_ptr, row, inside, 1, sC, Cg, TC), _load(g_ptr, row, inside, 1, sC, Cg, TC)
        sq, sq1 = x * x, x1 * x1
        d = k + alpha_n * _windows(zero, sq, sq1, LO, HI, TC)
        scale = tl.exp2(-beta * tl.log2(d))
        # (channels outside the group are 0: with k = 0 their 0 * inf / 0 would be NaN)
        t = tl.where(_chunk(row, inside, 0, sC, Cg, TC)[1], g * x * scale / d, 0.0)
        t_before = zero
        for i in range(0, CHUNKS):
            x2, g2 = _load(x_ptr, row, inside, i + 2, sC, Cg, TC), _load(g_ptr, row, inside, i + 2, sC, Cg, TC)
            sq2 = x2 * x2
            d1 = k + alpha_n * _windows(sq, sq1, sq2, LO, HI, TC)
            scale1 = tl.exp2(-beta * tl.log2(d1))
            t1 = tl.where(_chunk(row, inside, i + 1, sC, Cg, TC)[1], g1 * x1 * scale1 / d1, 0.0)
            # the windows holding channel j, [j - HI, j + LO]: the band mirrored
            spread = _windows(t_before, t, t1, HI, LO, TC)
            at, m = _chunk(row, inside, i, sC, Cg, TC)
            dx = g * scale - 2.0 * alpha_n * beta * x * spread
            tl.store(dx_ptr + at, dx.to(dx_ptr.dtype.element_ty), mask=m)
            t_before, t, x, g, scale = t, t1, x1, g1, scale1
            sq, sq1, x1, g1 = sq1, sq2, x2, g2


KERNELS = ("shift", "band")
BAND_BLOCK_P = 64  # pixel positions per program of the band kernels (a Hopper wgmma's M)
BAND_CHUNK = 16  # channels per chunk: divides the paper's groups (48, 96, 128, 256 maps)


def _launch_shape(x: torch.Tensor, groups: int) -> tuple[tuple[int, int], dict]:
    n, ch, h, w = x.shape
    cg = _group_width(ch, groups)
    s_n, s_c, s_h, s_w = x.stride()
    meta = dict(P=n * h * w, HW=h * w, W=w, sN=s_n, sC=s_c, sH=s_h, sW=s_w, Cg=cg,
                BLOCK_P=BLOCK_P, BLOCK_C=max(16, 1 << (cg - 1).bit_length()))  # a power of 2
    return (cdiv(n * h * w, BLOCK_P), groups), meta


def cdiv(a: int, b: int) -> int:
    """``a / b`` rounded up, in plain Python: Triton's ``cdiv`` costs microseconds a call on the
    host (a constexpr function's dispatch in Triton 3.8), and each launch computes its grid."""
    return -(-a // b)


def _group_width(channels: int, groups: int) -> int:
    if channels % groups:
        raise ValueError(f"LRN groups={groups} must divide the {channels} channels")
    return channels // groups


def _like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An empty tensor with ``x``'s shape and strides (its memory format)."""
    return torch.empty_strided(x.shape, x.stride(), dtype=dtype or x.dtype, device=x.device)


def forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
            groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, fp32 denominator) of LRN over ``x`` (N, C, H, W), contiguous or channels-last."""
    x = _dense(x)
    y, d = _like(x), _like(x, torch.float32)
    grid, meta = _launch_shape(x, groups)
    with _on(x):
        _lrn_fwd[grid](x, y, d, alpha_n=alpha / size, beta=beta, k=k, SIZE=size, **meta)
    return y, d


def backward(grad: torch.Tensor, x: torch.Tensor, denom: torch.Tensor, size: int, alpha: float, beta: float,
             groups: int = 1) -> torch.Tensor:
    """The input's gradient, from the output's, the input and ``forward``'s denominator."""
    x = _dense(x)
    grad, denom = _as(grad, x), _as(denom, x)
    dx = _like(x)
    grid, meta = _launch_shape(x, groups)
    with _on(x):
        _lrn_bwd[grid](grad, x, denom, dx, alpha_n=alpha / size, beta=beta, SIZE=size, **meta)
    return dx


# How the band kernels launch: positions per program (BLOCK_P), warps, and the software
# pipeline's depth (None: Triton's default). benchmarks/gpu_profile.py times other settings
# beside these (its lrn_band section); these are the ones the kernels were written for.
BAND_LAUNCH = dict(block_p=BAND_BLOCK_P, warps=4, stages=None)


def _band_launch(x: torch.Tensor, groups: int, block_p: int, warps: int,
                 stages: int | None) -> tuple[tuple[int, int], dict]:
    n, ch, h, w = x.shape
    s_n, s_c, s_h, s_w = x.stride()
    s_w = s_h // w if h > 1 else s_w  # a size-1 width's stride is arbitrary; the rows' is not
    cg = _group_width(ch, groups)
    meta = dict(HW=h * w, sN=s_n, sC=s_c, sW=s_w, Cg=cg, BLOCK_P=block_p, TC=BAND_CHUNK,
                CHUNKS=cdiv(cg, BAND_CHUNK), num_warps=warps)
    if stages is not None:
        meta["num_stages"] = stages
    return (n * cdiv(h * w, block_p), groups), meta


def band_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1,
                 **launch) -> torch.Tensor:
    """LRN over ``x`` (N, C, H, W), contiguous or channels-last, by the band kernels (``launch``:
    ``BAND_LAUNCH``'s settings to change)."""
    x = _dense(x)
    y = _like(x)
    grid, meta = _band_launch(x, groups, **{**BAND_LAUNCH, **launch})
    with _on(x):
        _lrn_fwd_band[grid](x, y, alpha_n=alpha / size, beta=beta, k=k, SIZE=size, **meta)
    return y


def band_backward(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                  groups: int = 1, **launch) -> torch.Tensor:
    """The input's gradient from the output's and the input (the denominator recomputed)."""
    x = _dense(x)
    grad = _as(grad, x)
    dx = _like(x)
    grid, meta = _band_launch(x, groups, **{**BAND_LAUNCH, **launch})
    with _on(x):
        _lrn_bwd_band[grid](grad, x, dx, alpha_n=alpha / size, beta=beta, k=k, SIZE=size, **meta)
    return dx


def _on(x: torch.Tensor):
    """Launch on ``x``'s GPU (a tower's under --model-parallel), not the current one."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when contiguous or channels-last, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _as(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with ``like``'s strides (the kernels address all their tensors with one set)."""
    if t.stride() == like.stride():
        return t
    fmt = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous() \
        else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


# ---------------------------------------------------------------------------
# PyTorch operators: autograd differentiates them, torch.compile keeps each as one call. Eager
# calls take the same functions through a plain autograd.Function instead (``eager_function``).


def traced() -> bool:
    """Whether the call is being traced or transformed rather than run: torch.compile and
    torch.export, ``torch.jit.trace``, a dispatch mode (fake tensors, ``make_fx``) or a functorch
    transform (vmap). These know the registered operators and not ``eager_function``'s."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or _python_dispatch._get_current_dispatch_mode() is not None
            or torch._C._functorch.maybe_current_level() is not None)


def eager_function(forward, setup_context, input_grad):
    """An autograd.Function computing what a registered operator computes, by the same
    functions, without the operator's dispatch. Eager training takes it: the operator layer costs
    host time on every call (benchmarks/host_cost.py), and a step whose kernels are short waits
    for its host. Whatever traces the call (``traced``) takes the operator, which torch.compile
    keeps as one call. ``forward(*inputs)`` returns the output first (then what the backward
    needs), ``setup_context`` is the operator's, ``input_grad(ctx, grad)`` gives the input's
    gradient. First derivatives only, as the operators."""

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            out = forward(*inputs)
            setup_context(ctx, inputs, out)
            return out[0] if isinstance(out, (list, tuple)) else out

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):
            return input_grad(ctx, grad), *[None] * (len(ctx.needs_input_grad) - 1)

    return Eager


@torch.library.custom_op("alexnet::lrn", mutates_args=())
def lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> list[torch.Tensor]:
    y, d = forward(x, size, alpha, beta, k, groups)
    return [y, d]


@lrn_op.register_fake
def _(x, size, alpha, beta, k, groups):
    x = _dense(x)
    return [_like(x), _like(x, torch.float32)]


@torch.library.custom_op("alexnet::lrn_backward", mutates_args=())
def lrn_backward_op(grad: torch.Tensor, x: torch.Tensor, denom: torch.Tensor, size: int, alpha: float, beta: float,
                    groups: int) -> torch.Tensor:
    return backward(grad, x, denom, size, alpha, beta, groups)


@lrn_backward_op.register_fake
def _(grad, x, denom, size, alpha, beta, groups):
    return _like(_dense(x))


def _setup(ctx, inputs, output):
    x, size, alpha, beta, _, groups = inputs
    ctx.save_for_backward(x, output[1])
    ctx.constants = (size, alpha, beta, groups)


def _input_grad(ctx, grad, backward_impl=backward):
    x, denom = ctx.saved_tensors
    size, alpha, beta, groups = ctx.constants
    return backward_impl(grad, x, denom, size, alpha, beta, groups)


lrn_op.register_autograd(lambda ctx, grads: (_input_grad(ctx, grads[0], lrn_backward_op), *[None] * 5),
                         setup_context=_setup)
_ShiftEager = eager_function(forward, _setup, _input_grad)


@torch.library.custom_op("alexnet::lrn_band", mutates_args=())
def lrn_band_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
    return band_forward(x, size, alpha, beta, k, groups)


@lrn_band_op.register_fake
def _(x, size, alpha, beta, k, groups):
    return _like(_dense(x))


@torch.library.custom_op("alexnet::lrn_band_backward", mutates_args=())
def lrn_band_backward_op(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                         groups: int) -> torch.Tensor:
    return band_backward(grad, x, size, alpha, beta, k, groups)


@lrn_band_backward_op.register_fake
def _(grad, x, size, alpha, beta, k, groups):
    return _like(_dense(x))


def _band_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])  # the input alone: no fp32 denominator kept
    ctx.constants = inputs[1:]


def _band_input_grad(ctx, grad, backward_impl=band_backward):
    (x,) = ctx.saved_tensors
    return backward_impl(grad, x, *ctx.constants)


lrn_band_op.register_autograd(lambda ctx, grad: (_band_input_grad(ctx, grad, lrn_band_backward_op), *[None] * 5),
                              setup_context=_band_setup)
_BandEager = eager_function(band_forward, _band_setup, _band_input_grad)


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                        groups: int = 1, kernel: str = "shift") -> torch.Tensor:
    """LRN through the fused kernels (CUDA, or any device under ``TRITON_INTERPRET=1``):
    ``kernel`` 'shift' (shifted loads, a stored denominator) or 'band' (band-matrix products;
    a window wider than two chunks, 2 * BAND_CHUNK + 1 channels, takes the shift kernels)."""
    if kernel not in KERNELS:
        raise ValueError(f"LRN kernel must be one of {KERNELS}, got {kernel!r}")
    band = kernel == "band" and size <= 2 * BAND_CHUNK + 1
    if traced():
        return lrn_band_op(x, size, alpha, beta, k, groups) if band else lrn_op(x, size, alpha, beta, k, groups)[0]
    return (_BandEager if band else _ShiftEager).apply(x, size, alpha, beta, k, groups)
