"""The training augmentation in one pass over the pixels, as a Triton kernel: each output value
is read once from the uint8 batch at its crop's (possibly mirrored) position, scaled to [0, 1],
has the mean (image or per channel) subtracted, is divided by the std, takes the image's PCA
colour offset, and is written in the dtype and memory format the network reads. The unfused
path (``transforms.TrainAugment``) does the same in some ten passes and a layout copy. A batch
from the 4:2:0 cache (``ycc.Planes420``) is read as its planes: each pixel's RGB is computed
from its Y and its block's Cb and Cr where it is read, with ``ycc.from_420``'s operations in
its order and its rounding (no fused multiply-adds), so the conversion costs no pass of its own.

The random draws (crops, flips, colour noise) are ``TrainAugment``'s own, from the same
generator in the same order, and each operation rounds as the tensor path's does on CUDA, so
the fused and unfused paths give the same batch there, to the last bit in fp32 (a GPU test); the
suite checks it on the CPU through Triton's interpreter, to within a rounding (the CPU divides
by 255 exactly, CUDA by a product with its reciprocal). Plain Triton only, as ``lrn_triton``.
"""

from __future__ import annotations

import contextlib

import torch

from .ycc import Planes420

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 256  # output pixels per program
# multiply, then add: ycc.from_420's two roundings, not a fused multiply-add's one
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


def available() -> bool:
    return triton is not None


if triton is not None:
    @triton.jit
    def _byte(v):
        """Round half to even and clamp to [0, 255]: ``ycc._u8``'s round_().clamp_()."""
        f = tl.floor(v)
        d = v - f
        odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
        up = (d > 0.5) | ((d == 0.5) & odd)
        return tl.minimum(tl.maximum(f + up.to(tl.float32), 0.0), 255.0)

    @triton.jit
    def _put(v, c: tl.constexpr, b, i, j, row, col, inside, mean_ptr, std_ptr, rgb_ptr, out_ptr,
             smc, smh, smw, sob, soc, soh, sow):
        """Channel ``c`` of the output pixels: ``v`` (0-255) scaled, mean and std, colour offset."""
        m = tl.load(mean_ptr + c * smc + row * smh + col * smw, mask=inside, other=0.0)
        s = tl.load(std_ptr + c)
        r = tl.load(rgb_ptr + b * 3 + c)
        # rounded as the tensor path on CUDA rounds: PyTorch divides by a number (255) as a product
        # with its reciprocal, and by a tensor (the std) exactly; Triton's `/` would be neither
        # (PTX div.full.f32, off by up to 2 ulp)
        y = tl.math.div_rn(v * (1.0 / 255.0) - m, s) + tl.math.div_rn(r, s)
        tl.store(out_ptr + b * sob + c * soc + i * soh + j * sow, y.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _augment(x_ptr, c_ptr, mean_ptr, std_ptr, top_ptr, left_ptr, flip_ptr, rgb_ptr, out_ptr, crop,
                 sxb, sxc, sxh, sxw, scb, scc, sch, scw, smc, smh, smw, sob, soc, soh, sow,
                 YCC: tl.constexpr, BLOCK: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)  # offsets past 2^31 in large batches
        p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = p < crop * crop
        i = p // crop
        j = p % crop
        top = tl.load(top_ptr + b)
        left = tl.load(left_ptr + b)
        flip = tl.load(flip_ptr + b)
        row = top + i
        col = left + tl.where(flip != 0, crop - 1 - j, j)
        if YCC:  # x: Y (B, S, S); c: Cb, Cr (B, 2, S/2, S/2), one sample per 2x2 block
            luma = tl.load(x_ptr + b * sxb + row * sxh + col * sxw, mask=inside, other=0).to(tl.float32)
            at = c_ptr + b * scb + (row // 2) * sch + (col // 2) * scw
            cb = tl.load(at, mask=inside, other=128).to(tl.float32) - 128.0
            cr = tl.load(at + scc, mask=inside, other=128).to(tl.float32) - 128.0
            _put(_byte(luma + 1.402 * cr), 0, b, i, j, row, col, inside, mean_ptr, std_ptr, rgb_ptr, out_ptr,
                 smc, smh, smw, sob, soc, soh, sow)
            _put(_byte(luma - 0.344136 * cb - 0.714136 * cr), 1, b, i, j, row, col, inside, mean_ptr, std_ptr,
                 rgb_ptr, out_ptr, smc, smh, smw, sob, soc, soh, sow)
            _put(_byte(luma + 1.772 * cb), 2, b, i, j, row, col, inside, mean_ptr, std_ptr, rgb_ptr, out_ptr,
                 smc, smh, smw, sob, soc, soh, sow)
        else:
            for c in tl.static_range(3):
                v = tl.load(x_ptr + b * sxb + c * sxc + row * sxh + col * sxw, mask=inside, other=0).to(tl.float32)
                _put(v, c, b, i, j, row, col, inside, mean_ptr, std_ptr, rgb_ptr, out_ptr,
                     smc, smh, smw, sob, soc, soh, sow)


def fuses(device: torch.device) -> bool:
    """Whether the training augmentation runs fused on ``device`` by default: on CUDA with Triton."""
    return device.type == "cuda" and available()


def augment(x: torch.Tensor | Planes420, mean: torch.Tensor, std: torch.Tensor, top: torch.Tensor,
            left: torch.Tensor, flip: torch.Tensor, rgb: torch.Tensor, crop: int, dtype: torch.dtype = torch.float32,
            channels_last: bool = False) -> torch.Tensor:
    """uint8 images (B, 1 or 3, S, S), or their 4:2:0 planes, -> (B, 3, crop, crop) in ``dtype``:
    crop at (top, left), mirrored where ``flip``, ``(x / 255 - mean) / std + rgb / std``.
    ``mean``: (3, S, S) or (3, 1, 1); ``std``: (3, 1, 1); ``rgb``: (B, 3) colour offsets in [0, 1] units."""
    b = x.shape[0]
    out = torch.empty(b, 3, crop, crop, dtype=dtype, device=x.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    ycc = isinstance(x, Planes420)
    if ycc:
        x, chroma = x.y, x.chroma
        (sxb, sxh, sxw), sxc = x.stride(), 0
        scb, scc, sch, scw = chroma.stride()
    else:
        chroma, (scb, scc, sch, scw) = x, (0, 0, 0, 0)  # no colour planes: never read
        sxb, sxc, sxh, sxw = x.stride()
        if x.shape[1] == 1:
            sxc = 0  # grayscale: the one channel read three times
    mean = mean.float()
    smc, smh, smw = mean.stride()
    if mean.shape[-1] == 1:
        smh = smw = 0  # per-channel means: the same value at every pixel
    grid = (b, triton.cdiv(crop * crop, BLOCK))
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _augment[grid](x, chroma, mean, std.float().reshape(3).contiguous(), top.to(torch.int32),
                       left.to(torch.int32), flip.to(torch.int32), rgb.float().contiguous(), out, crop,
                       sxb, sxc, sxh, sxw, scb, scc, sch, scw, smc, smh, smw, *out.stride(), YCC=ycc, BLOCK=BLOCK,
                       **LAUNCH_OPTIONS)
    return out
