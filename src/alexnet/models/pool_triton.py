"""Max pooling as two Triton kernels, forward and backward, for the pools of AlexNet's kind
(square windows, any stride and padding, no dilation).

PyTorch's CUDA pooling backward for channels-last maps took 0.83 ms for the paper network's
pool1 at batch 256 on an H200 (benchmarks/gpu_profile.py, 2026-11-27), about 13 times the time
its fewest bytes need: it zero-fills the input's gradient and then adds into it, and it keeps
each maximum's place as an int64 flat index. Here:

- the forward keeps each maximum's place as an int8, its offset inside the window
  (``kh * K + kw``), an eighth of the memory;
- the backward gathers rather than scatters: a program takes a tile of input positions by a
  tile of channels, visits the at most ceil(K/S)^2 windows that hold each position (4 for the
  paper's 3x3 stride-2 pools), and adds the gradients of those whose maximum it is, in fp32;
  it writes each input gradient once, with no zero-fill and no atomics.

The same results as PyTorch's: the first maximum of a window in row-major order takes the
gradient (``v > best``), and a NaN wins (``v != v``), as PyTorch's own kernels decide; sums of
overlapping windows' gradients are taken in PyTorch's order (window rows, then columns,
ascending). Positions and channels are addressed through the tensors' strides, so contiguous
(NCHW) and channels-last (NHWC) maps both work, and the outputs take the input's memory format.

Only plain Triton, which the GPU machine's older Triton accepts; ``TRITON_INTERPRET=1`` runs
the kernels on the CPU, where the suite checks them against PyTorch's pooling. ``max_pool2d``
is a registered operator (``alexnet::max_pool2d_triton``): autograd differentiates it and
``torch.compile`` keeps it as one call; eager calls take the same functions without its dispatch.
"""

from __future__ import annotations

import os

import torch

from .fastconv import _memory_format as _format
from .lrn_triton import _dense, _on, cdiv, eager_function, traced, triton

if triton is not None:
    import triton.language as tl

BLOCK_P = 32  # positions per program
BLOCK_C = 32  # channels per program: divides the paper's 96, 256 and torchvision's 64, 192, 256
# How the kernels launch; benchmarks/gpu_profile.py times other settings beside these (its
# pool_tiles section): on an H200 these ran pool1 at some 17% of a copy's bandwidth (2026-11-27)
POOL_LAUNCH = dict(block_p=BLOCK_P, block_c=BLOCK_C, warps=4)


def available() -> bool:
    return triton is not None


def runs_on(x: torch.Tensor) -> bool:
    """Whether the kernels can take ``x``: Triton installed, and ``x`` on CUDA or the interpreter on."""
    return triton is not None and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def supports(x: torch.Tensor, k: int, s: int, p: int, ceil: bool) -> bool:
    """Whether these kernels compute this pool as PyTorch would: a batch of maps in a dtype whose
    values fp32 holds exactly, a window whose places fit an int8, at least one output, and
    offsets inside int32 (the kernels' address arithmetic): below 2^31 elements, the paper's
    pool1 up to a batch of about 7,000. Elsewhere PyTorch's pooling answers (and raises its own
    errors)."""
    if x.dim() != 4 or x.dtype not in DTYPES or not _window_ok(k, s, p):
        return False
    if x.numel() >= 2**31 or min(x.shape[:2]) < 1:
        return False
    return min(output_size(x.shape[2], k, s, p, ceil), output_size(x.shape[3], k, s, p, ceil)) >= 1


if triton is not None:
    @triton.jit
    def _tile(P, OW_or_W, HW, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """This program's positions (image, row, column) and channels, with their masks."""
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        n, r = p // HW, p % HW
        return n, r // OW_or_W, r % OW_or_W, p < P, c, c < C

    @triton.jit
    def _pool_fwd(x_ptr, y_ptr, i_ptr, P, C, H, W, OH, OW, sN, sC, sH, sW, tN, tC, tH, tW,
                  K: tl.constexpr, S: tl.constexpr, PAD: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        n, oh, ow, mp, c, mc = _tile(P, OW, OH * OW, C, BLOCK_P, BLOCK_C)
        h0, w0 = oh * S - PAD, ow * S - PAD
        # a window whose values are all -inf keeps its first place inside the map (PyTorch's)
        first = tl.maximum(-h0, 0) * K + tl.maximum(-w0, 0)
        best = tl.full([BLOCK_P, BLOCK_C], float("-inf"), tl.float32)
        where = tl.zeros([BLOCK_P, BLOCK_C], tl.int32) + first[:, None]
        for kh in tl.static_range(K):
            for kw in tl.static_range(K):
                h, w = h0 + kh, w0 + kw
                inside = mp & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                at = n * sN + h * sH + w * sW
                v = tl.load(x_ptr + at[:, None] + c[None, :] * sC, mask=inside[:, None] & mc[None, :],
                            other=float("-inf")).to(tl.float32)
                take = (v > best) | (v != v)
                best = tl.where(take, v, best)
                where = tl.where(take, kh * K + kw, where)
        out = (n * tN + oh * tH + ow * tW)[:, None] + c[None, :] * tC
        m = mp[:, None] & mc[None, :]
        tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=m)
        tl.store(i_ptr + out, where.to(tl.int8), mask=m)

    @triton.jit
    def _pool_bwd(g_ptr, i_ptr, dx_ptr, P, C, H, W, OH, OW, sN, sC, sH, sW, tN, tC, tH, tW, uN, uC, uH, uW,
                  K: tl.constexpr, S: tl.constexpr, PAD: tl.constexpr, REACH: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        n, h, w, mp, c, mc = _tile(P, W, H * W, C, BLOCK_P, BLOCK_C)
        acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
        # the windows holding (h, w): rows (h + PAD) // S - REACH + 1 .. (h + PAD) // S, ascending
        for a in tl.static_range(REACH):
            oh = (h + PAD) // S - (REACH - 1) + a
            kh = h + PAD - oh * S
            row_ok = (oh >= 0) & (oh < OH) & (kh < K)
            for b in tl.static_range(REACH):
                ow = (w + PAD) // S - (REACH - 1) + b
                kw = w + PAD - ow * S
                ok = mp & row_ok & (ow >= 0) & (ow < OW) & (kw < K)
                at = (n * tN + oh * tH + ow * tW)[:, None] + c[None, :] * tC
                m = ok[:, None] & mc[None, :]
                mine = tl.load(i_ptr + at, mask=m, other=-1).to(tl.int32) == (kh * K + kw)[:, None]
                at = (n * uN + oh * uH + ow * uW)[:, None] + c[None, :] * uC  # the gradient's own strides
                # loaded whole and then selected: a mask that depends on the places would make
                # every load a scalar one (benchmarks/triton_static.py)
                g = tl.load(g_ptr + at, mask=m, other=0.0).to(tl.float32)
                acc += tl.where(mine, g, 0.0)
        at = (n * sN + h * sH + w * sW)[:, None] + c[None, :] * sC
        tl.store(dx_ptr + at, acc.to(dx_ptr.dtype.element_ty), mask=mp[:, None] & mc[None, :])


def output_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """PyTorch's pooled length: a last window that would start in the right padding is dropped."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _window_ok(k: int, s: int, p: int) -> bool:
    """A window whose places fit an int8, a positive stride, at most half a window of padding."""
    return 1 <= k <= 11 and s >= 1 and 0 <= p <= k // 2


def _check(x: torch.Tensor, k: int, s: int, p: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"max pooling takes (N, C, H, W) maps, got shape {tuple(x.shape)}")
    if not _window_ok(k, s, p):
        raise ValueError(f"max pooling needs 1 <= kernel <= 11 (its places are int8), stride >= 1 and "
                         f"0 <= padding <= kernel // 2; got kernel {k}, stride {s}, padding {p}")


def _outputs_like(x: torch.Tensor, k: int, s: int, p: int, ceil: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w = x.shape
    shape = (n, c, output_size(h, k, s, p, ceil), output_size(w, k, s, p, ceil))
    fmt = _format(x)
    return (torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt),
            torch.empty(shape, dtype=torch.int8, device=x.device, memory_format=fmt))


def forward(x: torch.Tensor, k: int, s: int, p: int = 0, ceil: bool = False,
            **launch) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, int8 place of each maximum inside its window) of a k x k max pool (``launch``:
    ``POOL_LAUNCH``'s settings to change)."""
    _check(x, k, s, p)
    x = _dense(x)
    y, places = _outputs_like(x, k, s, p, ceil)
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    _run(_pool_fwd, y, launch, x, y, places, n * oh * ow, c, h, w, oh, ow, *x.stride(), *y.stride(), K=k, S=s, PAD=p)
    return y, places


def _input_like(grad: torch.Tensor, h: int, w: int, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((*grad.shape[:2], h, w), dtype=grad.dtype, device=grad.device, memory_format=fmt)


def backward(grad: torch.Tensor, places: torch.Tensor, h: int, w: int, k: int, s: int, p: int = 0,
             channels_last: bool = False, **launch) -> torch.Tensor:
    """The gradient of the (N, C, h, w) input, stored channels-last or contiguous, from the output's
    (read through its own strides, whatever they are: no copy)."""
    dx = _input_like(grad, h, w, channels_last)
    n, c = dx.shape[:2]
    oh, ow = places.shape[2:]
    _run(_pool_bwd, dx, launch, grad, places, dx, n * h * w, c, h, w, oh, ow, *dx.stride(), *places.stride(),
         *grad.stride(), K=k, S=s, PAD=p, REACH=-(-k // s))
    return dx


def _run(kernel, out: torch.Tensor, launch: dict, *args, **constants) -> None:
    """``kernel`` over every position of ``out`` (its 4th argument: their count) by every channel,
    in tiles of ``POOL_LAUNCH``'s settings changed by ``launch``, on ``out``'s device."""
    if not out.numel():
        return
    settings = {**POOL_LAUNCH, **launch}
    bp, bc = settings["block_p"], settings["block_c"]
    grid = (cdiv(args[3], bp), cdiv(out.shape[1], bc))
    with _on(out):
        kernel[grid](*args, **constants, BLOCK_P=bp, BLOCK_C=bc, num_warps=settings["warps"])


# ---------------------------------------------------------------------------
# PyTorch operators: autograd differentiates them, torch.compile keeps each as one call.

@torch.library.custom_op("alexnet::max_pool2d_triton", mutates_args=())
def max_pool2d_op(x: torch.Tensor, k: int, s: int, p: int, ceil: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return forward(x, k, s, p, ceil)


@max_pool2d_op.register_fake
def _(x, k, s, p, ceil):
    _check(x, k, s, p)
    return _outputs_like(_dense(x), k, s, p, ceil)


@torch.library.custom_op("alexnet::max_pool2d_triton_backward", mutates_args=())
def max_pool2d_backward_op(grad: torch.Tensor, places: torch.Tensor, h: int, w: int, k: int, s: int, p: int,
                           channels_last: bool) -> torch.Tensor:
    return backward(grad, places, h, w, k, s, p, channels_last)


@max_pool2d_backward_op.register_fake
def _(grad, places, h, w, k, s, p, channels_last):
    return _input_like(grad, h, w, channels_last)


def _setup(ctx, inputs, output):
    x, k, s, p, _ = inputs
    ctx.save_for_backward(output[1])  # the places alone: the input is not kept
    ctx.args = (x.shape[2], x.shape[3], k, s, p, _format(x) == torch.channels_last)  # the format _dense gives
    ctx.mark_non_differentiable(output[1])


def _input_grad(ctx, grad, backward_impl=backward):
    (places,) = ctx.saved_tensors
    return backward_impl(grad, places, *ctx.args)


max_pool2d_op.register_autograd(lambda ctx, grad, _: (_input_grad(ctx, grad, max_pool2d_backward_op), *[None] * 4),
                                setup_context=_setup)
_Eager = eager_function(forward, _setup, _input_grad)


def max_pool2d(x: torch.Tensor, k: int, s: int, p: int = 0, ceil: bool = False) -> torch.Tensor:
    """A k x k max pool with stride s and padding p through the Triton kernels (CUDA, or any
    device under ``TRITON_INTERPRET=1``; ``supports`` says which pools they compute as PyTorch
    does): the registered operator where something traces the call (``lrn_triton.traced``), the
    same functions without its dispatch where it simply runs. First derivatives only: the
    backward is not itself differentiable."""
    if traced():
        return max_pool2d_op(x, k, s, p, ceil)[0]
    return _Eager.apply(x, k, s, p, ceil)
