"""Local response normalisation (paper section 3.3).

    b[c] = a[c] / (k + alpha/n * sum_{c' in window(c)} a[c']^2) ** beta

over ``n`` adjacent channels centred on ``c`` (clipped at the edges). alpha is
divided by n, as in cuda-convnet and Caffe, the code the paper's results came
from; the formula printed in the paper omits the division.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0) -> torch.Tensor:
    """LRN across channels of an (N, C, H, W) tensor.

    The channel-window sum is an average pool over a (size, 1, 1) window of the
    squared input, zero-padded along C: the average already divides by ``size``,
    which is the alpha/n convention. Written with a 3D pool so that the same
    code runs eagerly and fuses into one kernel under ``torch.compile``.
    """
    sq = x.square().unsqueeze(1)  # (N, 1, C, H, W)
    sq = F.pad(sq, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    window_mean = F.avg_pool3d(sq, (size, 1, 1), stride=1).squeeze(1)  # (N, C, H, W)
    return x * (window_mean * alpha + k).pow(-beta)


class LocalResponseNorm(nn.Module):
    """LRN with the paper's constants as defaults (n=5, k=2, alpha=1e-4, beta=0.75)."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
