"""Local response normalisation (paper section 3.3).

    b[c] = a[c] / (k + alpha/n * sum_{c' in window(c)} a[c']^2) ** beta

over ``n`` adjacent channels centred on ``c`` (clipped at the edges). alpha is
divided by n, as in cuda-convnet and Caffe, the code the paper's results came
from; the formula printed in the paper omits the division.

PyTorch's ``nn.LocalResponseNorm`` builds this from a 5-D average pool and
several elementwise passes, and autograd keeps every intermediate for the
backward pass: a known speed trap. ``local_response_norm`` here has a hand-written
backward (the one Caffe uses) that keeps three tensors and sums channel windows
with shifted adds; on the CPU a training step of the ``paper`` network spends
about half as long in it. On CUDA the default is ``lrn_triton``'s band kernels: the same
formula as two fused kernels (forward, backward), the window sums as products on the tensor
cores, measured the fastest on an H200 (docs/benchmarks.md, 2026-11-27: 11.74 against 13.06 ms
a training step at batch 256, and less memory). ``ALEXNET_LRN=triton`` takes the shift kernels
(shifted loads, a stored denominator), ``ALEXNET_LRN=torch`` this module's path.
``local_response_norm_reference`` is the plain formula, against which all are tested.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

# The paper's constants (section 3.3), the only place they are written: n = 5 channels,
# k = 2, alpha = 1e-4 (divided by n, as cuda-convnet and Caffe do), beta = 0.75.
SIZE, K, ALPHA, BETA = 5, 2.0, 1e-4, 0.75


def window_sum(x: torch.Tensor, size: int, mirrored: bool = False, groups: int = 1) -> torch.Tensor:
    """Sum over channels [c - size//2, c + (size-1)//2] for each channel c (PyTorch's and
    Caffe's window; centred for odd sizes), zero beyond the edges. ``mirrored`` sums over
    [c - (size-1)//2, c + size//2], the windows that contain c. With ``groups`` the windows
    stop at the edges of each block of C/groups channels.

    Shifted adds of a zero-padded copy: padding, slicing and concatenating along the
    channels all keep the input's memory format, so a channels-last tensor is never
    transposed (a reshape into (N * groups, C / groups, H, W) would be)."""
    before, after = size // 2, (size - 1) // 2
    pad = (0, 0, 0, 0, *((after, before) if mirrored else (before, after)))
    sums = []
    for part in (x.chunk(groups, dim=1) if groups > 1 else (x,)):
        width = part.shape[1]
        padded = F.pad(part, pad)
        total = padded[:, 0:width].clone()
        for i in range(1, size):
            total += padded[:, i:i + width]
        sums.append(total)
    return sums[0] if groups == 1 else torch.cat(sums, 1)


class _LocalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int) -> torch.Tensor:
        denom = window_sum(x * x, size, groups=groups).mul_(alpha / size).add_(k)  # k + alpha/n * sum a^2
        scale = denom.pow(-beta)
        ctx.save_for_backward(x, denom, scale)
        ctx.constants = (size, alpha, beta, groups)
        return x * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # d b_c / d a_j = [c == j] scale_j - (2 alpha beta / n) a_j a_c scale_c / denom_c for j in window(c):
        # summing over the c whose window holds j is a window sum over the mirrored window.
        x, denom, scale = ctx.saved_tensors
        size, alpha, beta, groups = ctx.constants
        spread = window_sum(grad * x * scale / denom, size, mirrored=True, groups=groups)
        return grad * scale - (2 * alpha * beta / size) * x * spread, None, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = SIZE, alpha: float = ALPHA, beta: float = BETA,
                        k: float = K, groups: int = 1) -> torch.Tensor:
    """LRN across the channels of an (N, C, H, W) tensor, with the fast backward; ``groups``
    normalises each block of C/groups channels on its own.

    Half precision is computed in fp32: a ReLU output on the paper's 0-255 input scale
    exceeds 255, whose square overflows fp16, and the result would be 0 rather than inf,
    which a gradient scaler never notices. bf16 has fp32's range and stays bf16. On CUDA,
    the fused Triton kernels (fp32 inside, the input's dtype out)."""
    kernel = _fused() if x.is_cuda else ""
    if kernel:
        from . import lrn_triton

        return lrn_triton.local_response_norm(x, size, alpha, beta, k, groups, kernel)
    if x.dtype == torch.float16:
        return _LocalResponseNorm.apply(x.float(), size, alpha, beta, k, groups).half()
    return _LocalResponseNorm.apply(x, size, alpha, beta, k, groups)


IMPLS = ("auto", "triton", "triton-band", "torch")
_chosen: str | None = None  # set_impl's choice; None: ALEXNET_LRN's


def set_impl(choice: str | None) -> None:
    """Choose the CUDA path for this process: 'triton', 'triton-band', 'torch', 'auto' (Triton's
    band kernels where installed), or None to follow ``ALEXNET_LRN`` again (the profiler
    compares them in one process)."""
    global _chosen, _decided
    if choice is not None and choice not in IMPLS:
        raise ValueError(f"LRN implementation must be one of {IMPLS}, got {choice!r}")
    _chosen, _decided = choice, None


_decided: str | None = None  # _fused's answer, once asked (a plain global: torch.compile reads it)


def _fused() -> str:
    """Which Triton kernels CUDA tensors take ('shift' or 'band'), or '' for the PyTorch path:
    'band' where Triton is installed, unless ``ALEXNET_LRN`` (or ``set_impl``) says otherwise."""
    global _decided
    if _decided is None:
        _decided = _decide()
    return _decided


def _decide() -> str:
    choice = _chosen or os.environ.get("ALEXNET_LRN", "auto")
    if choice not in IMPLS:
        from ..errors import AlexNetError

        raise AlexNetError(f"ALEXNET_LRN must be one of {', '.join(IMPLS)}; got {choice!r}")
    if choice == "torch":
        return ""
    from . import lrn_triton

    if choice != "auto" and not lrn_triton.available():
        from ..errors import AlexNetError

        raise AlexNetError(f"ALEXNET_LRN={choice}, but Triton is not installed")
    if not lrn_triton.available():
        return ""
    if choice == "auto" and torch.version.hip is not None:
        return "shift"  # the band kernels' tf32 products: not every ROCm GPU has them
    return "shift" if choice == "triton" else "band"


def local_response_norm_reference(x: torch.Tensor, size: int = SIZE, alpha: float = ALPHA, beta: float = BETA,
                                  k: float = K) -> torch.Tensor:
    """The formula as autograd sees it: the window mean of a^2 is an average pool over
    a (size, 1, 1) window of the zero-padded squares (the mean already divides alpha by n)."""
    sq = x.square().unsqueeze(1)  # (N, 1, C, H, W)
    sq = F.pad(sq, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    window_mean = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1)  # (N, C, H, W)
    return x * (window_mean * alpha + k).pow(-beta)


class LocalResponseNorm(nn.Module):
    """LRN with the paper's constants as defaults (n=5, k=2, alpha=1e-4, beta=0.75).

    ``groups`` > 1 normalises each block of C/groups channels on its own, the windows
    stopping at block edges: the two-GPU network, where each GPU normalised its own maps.
    """

    def __init__(self, size: int = SIZE, alpha: float = ALPHA, beta: float = BETA, k: float = K,
                 groups: int = 1) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
                + (f", groups={self.groups}" if self.groups > 1 else ""))
