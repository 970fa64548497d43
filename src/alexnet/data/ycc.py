"""JPEG's YCbCr at 4:2:0 (full-range ITU-R BT.601, as JFIF defines it): the conversion from and
to uint8 RGB, and a batch of images held in that form (``Planes420``), as the decoded cache's
compact form (``--cache-format 420``) hands it to the training step.

The formulas are written out as arithmetic on the planes (no matmul: on CUDA a matmul may run
in TF32 and move a value across a rounding boundary), in the order ``augment_triton``'s fused
pass repeats, so that the two give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# RGB from YCbCr (JFIF): R = Y + 1.402 Cr', G = Y - 0.344136 Cb' - 0.714136 Cr', B = Y + 1.772 Cb',
# with Cb' = Cb - 128, Cr' = Cr - 128
R_CR, G_CB, G_CR, B_CB = 1.402, 0.344136, 0.714136, 1.772


def to_420(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB (N, 3, S, S) as JPEG's YCbCr: Y (N, S, S) and Cb, Cr averaged over 2x2 blocks
    (N, 2, ceil(S/2), ceil(S/2)), uint8, rounded."""
    r, g, b = images.float().unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    chroma = torch.stack([128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                          128 + 0.5 * r - 0.418688 * g - 0.081312 * b], 1)
    if chroma.shape[-1] % 2 or chroma.shape[-2] % 2:  # odd sides: the last row/column stands alone
        chroma = F.pad(chroma, (0, chroma.shape[-1] % 2, 0, chroma.shape[-2] % 2), mode="replicate")
    return _u8(y), _u8(F.avg_pool2d(chroma, 2))


def from_420(y: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """``to_420``'s planes back to uint8 RGB (N, 3, S, S), each colour sample covering its 2x2
    block, on the planes' device."""
    h, w = y.shape[-2:]
    cb, cr = (chroma.float().repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w] - 128).unbind(1)
    y = y.float()
    return _u8(torch.stack([y + R_CR * cr, y - G_CB * cb - G_CR * cr, y + B_CB * cb], 1))


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(eq=False)
class Planes420:
    """A batch of images in 4:2:0: Y (B, S, S) and Cb, Cr (B, 2, ceil(S/2), ceil(S/2)), uint8.
    The fused training augmentation reads the planes as they are; every other reader asks for
    RGB (``rgb()``, or ``transforms.to_rgb``)."""

    y: torch.Tensor
    chroma: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """The shape of the RGB batch these planes stand for: (B, 3, S, S)."""
        b, h, w = self.y.shape
        return torch.Size((b, 3, h, w))

    @property
    def device(self) -> torch.device:
        return self.y.device

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, images: slice) -> Planes420:
        return Planes420(self.y[images], self.chroma[images])

    def rgb(self) -> torch.Tensor:
        return from_420(self.y, self.chroma)
