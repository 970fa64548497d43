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
about half as long in it. ``local_response_norm_reference`` is the plain formula,
against which it is tested.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_sum(x: torch.Tensor, size: int, mirrored: bool = False) -> torch.Tensor:
    """Sum over channels [c - size//2, c + (size-1)//2] for each channel c (PyTorch's and
    Caffe's window; centred for odd sizes), zero beyond the edges. ``mirrored`` sums over
    [c - (size-1)//2, c + size//2], the windows that contain c."""
    c = x.shape[1]
    before, after = size // 2, (size - 1) // 2
    padded = F.pad(x, (0, 0, 0, 0, *((after, before) if mirrored else (before, after))))
    out = padded[:, 0:c].clone()
    for i in range(1, size):
        out += padded[:, i:i + c]
    return out


class _LocalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        denom = window_sum(x * x, size).mul_(alpha / size).add_(k)  # k + alpha/n * sum a^2
        scale = denom.pow(-beta)
        ctx.save_for_backward(x, denom, scale)
        ctx.constants = (size, alpha, beta)
        return x * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # d b_c / d a_j = [c == j] scale_j - (2 alpha beta / n) a_j a_c scale_c / denom_c for j in window(c):
        # summing over the c whose window holds j is a window sum over the mirrored window.
        x, denom, scale = ctx.saved_tensors
        size, alpha, beta = ctx.constants
        spread = window_sum(grad * x * scale / denom, size, mirrored=True)
        return grad * scale - (2 * alpha * beta / size) * x * spread, None, None, None, None


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0) -> torch.Tensor:
    """LRN across the channels of an (N, C, H, W) tensor, with the fast backward."""
    return _LocalResponseNorm.apply(x, size, alpha, beta, k)


def local_response_norm_reference(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                                  k: float = 2.0) -> torch.Tensor:
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

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 groups: int = 1) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        n, c, h, w = x.shape  # (N, C, H, W) -> (N * groups, C / groups, H, W) and back
        y = local_response_norm(x.reshape(n * self.groups, c // self.groups, h, w),
                                self.size, self.alpha, self.beta, self.k)
        return y.reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
                + (f", groups={self.groups}" if self.groups > 1 else ""))
