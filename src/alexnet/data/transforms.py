"""The paper's augmentation and test-time crops as batched tensor operations.

Images arrive as uint8 batches (B, C, S, S) at the preprocessed size S (the
paper's 256x256) and are cropped, flipped, lit and normalised on whatever
device they are on, all images of a batch in a few kernels: no per-image
Python on the hot path. Random draws come from an explicit ``torch.Generator``,
so the same seed gives the same crops, flips and colour noise.
"""

from __future__ import annotations

import torch

from .ycc import Planes420

# PCA of ImageNet's RGB pixels in [0, 1], the values in common use (fb.resnet.torch, timm):
# eigenvalues, and eigenvectors as columns (rows are R, G, B).
IMAGENET_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = torch.tensor([
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
])
# torchvision's per-channel statistics, for --normalize channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(x: torch.Tensor | Planes420) -> torch.Tensor:
    """(B, 1, H, W) grayscale becomes 3 identical channels (a view, no copy); 4:2:0 planes, RGB."""
    if isinstance(x, Planes420):
        return x.rgb()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _gather(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-image crops: out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]].

    ``x`` is (B, C, H, W), or (C, H, W) shared by the batch (a mean image).
    """
    b = torch.arange(rows.shape[0], device=rows.device)[:, None, None]
    r, c = rows[:, :, None], cols[:, None, :]
    if x.dim() == 3:
        out = x[:, r, c]  # (C, B, h, w)
        return out.permute(1, 0, 2, 3)
    out = x[b, :, r, c]  # advanced indices first: (B, h, w, C)
    return out.permute(0, 3, 1, 2)


def crop_indices(crop: int, top: torch.Tensor, left: torch.Tensor,
                 flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of each image's crop; flipped images read columns backwards."""
    ar = torch.arange(crop, device=top.device)
    rows = top[:, None] + ar
    cols = left[:, None] + torch.where(flip[:, None], crop - 1 - ar, ar)
    return rows, cols


class Normalizer:
    """``(x - mean) / std`` for x in [0, 1].

    ``mean`` is a (3, S, S) mean image (the paper subtracts the training set's mean
    image; with ``std = 1/255`` the network sees Caffe's 0-255 scale, which is
    what the paper's N(0, 0.01) initialisation was tuned for) or a (3, 1, 1)
    per-channel mean (torchvision). ``std`` is (3, 1, 1).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean, self.std = mean.float(), std.float()

    @classmethod
    def channel(cls) -> "Normalizer":
        return cls(torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1))

    @classmethod
    def mean_image(cls, mean: torch.Tensor) -> "Normalizer":
        return cls(mean, torch.full((3, 1, 1), 1 / 255))

    @property
    def is_image(self) -> bool:
        return self.mean.shape[-1] > 1

    def to(self, device: torch.device | str) -> "Normalizer":
        return Normalizer(self.mean.to(device), self.std.to(device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state_dict(cls, d: dict[str, torch.Tensor]) -> "Normalizer":
        return cls(d["mean"], d["std"])

    def crops(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Normalised float crops of uint8 images: crop first, then subtract the mean
        image at the same positions (equal to Caffe's subtract-then-crop)."""
        x = _gather(to_rgb(x), rows, cols).float().div_(255)
        mean = _gather(self.mean, rows, cols) if self.is_image else self.mean
        return x.sub_(mean).div_(self.std)


def lighting_offsets(batch: int, sigma: float, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", eigval: torch.Tensor = IMAGENET_EIGVAL,
                     eigvec: torch.Tensor = IMAGENET_EIGVEC) -> torch.Tensor:
    """PCA colour noise (paper section 4.1): per image, the RGB offset
    ``sum_i alpha_i * lambda_i * p_i`` with ``alpha_i ~ N(0, sigma)``. Returns (B, 3).
    ``eigval``/``eigvec`` already on ``device`` spare a host copy per call."""
    alpha = torch.randn(batch, 3, generator=generator, device=device) * sigma
    return (alpha * eigval.to(device)) @ eigvec.to(device).T


class TrainAugment:
    """Random crop + horizontal flip + PCA lighting + normalisation, batched.

    On CUDA (where Triton is installed) the four run as one kernel (``augment_triton``), which
    also writes the ``dtype`` and memory format the network reads; elsewhere as tensor
    operations, in fp32. Both draw the same random numbers in the same order."""

    def __init__(self, normalizer: Normalizer, crop: int, random_crop: bool = True, flip: bool = True,
                 lighting: float = 0.1, dtype: torch.dtype | None = None, channels_last: bool = False,
                 fused: bool | None = None) -> None:
        self.normalizer, self.crop = normalizer, crop
        self.random_crop, self.flip, self.lighting = random_crop, flip, lighting
        device = normalizer.mean.device  # the PCA constants live where the batches are: no copy per step
        self.eigval, self.eigvec = IMAGENET_EIGVAL.to(device), IMAGENET_EIGVEC.to(device)
        self.dtype, self.channels_last, self.fused = dtype or torch.float32, channels_last, fused

    def draws(self, b: int, size: int, dev: torch.device, generator: torch.Generator | None):
        """Each image's crop corner, whether it is mirrored, and its colour offset (B, 3) or None."""
        if self.random_crop:
            span = size - self.crop + 1
            top = torch.randint(0, span, (b,), generator=generator, device=dev)
            left = torch.randint(0, span, (b,), generator=generator, device=dev)
        else:
            top = left = torch.full((b,), (size - self.crop) // 2, device=dev)
        if self.flip:
            flip = torch.rand(b, generator=generator, device=dev) < 0.5
        else:
            flip = torch.zeros(b, dtype=torch.bool, device=dev)
        rgb = lighting_offsets(b, self.lighting, generator, dev, self.eigval, self.eigvec) if self.lighting > 0 \
            else None
        return top, left, flip, rgb

    def __call__(self, x: torch.Tensor | Planes420, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, C, S, S), or its 4:2:0 planes -> (B, 3, crop, crop): float32 on the tensor
        path, ``dtype`` fused (which converts 4:2:0 to RGB as it reads each pixel)."""
        b, size, dev = x.shape[0], x.shape[-1], x.device
        top, left, flip, rgb = self.draws(b, size, dev, generator)
        if self._fused(x):
            from . import augment_triton

            n = self.normalizer
            rgb = torch.zeros(b, 3, device=dev) if rgb is None else rgb
            return augment_triton.augment(x, n.mean, n.std, top, left, flip, rgb, self.crop, self.dtype,
                                          self.channels_last)
        rows, cols = crop_indices(self.crop, top, left, flip)  # crops' to_rgb converts 4:2:0 planes
        out = self.normalizer.crops(x, rows, cols)
        if rgb is not None:
            # The noise lives in [0, 1] RGB space; after normalisation it is divided by std.
            out += (rgb / self.normalizer.std.view(1, 3)).view(b, 3, 1, 1)
        return out

    def _fused(self, x: torch.Tensor | Planes420) -> bool:
        """The fused kernel where asked, else on CUDA where Triton is installed (decided once)."""
        if self.fused is None:
            from . import augment_triton

            self.fused = augment_triton.fuses(x.device)
        return self.fused


def ten_crop_offsets(size: int, crop: int) -> list[tuple[int, int]]:
    """(top, left) of the paper's five test patches: the four corners and the center."""
    far, mid = size - crop, (size - crop) // 2
    return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]


CENTER_VIEW = 4  # the center patch's place among ``EvalCrops``' ten views (unreflected)


def normalized_window(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, top: int, left: int,
                      crop: int) -> torch.Tensor:
    """The float patch at (top, left) of uint8 images (B, C, S, S), normalised: x/255 minus
    the mean (a mean image cut at the same place, or per-channel), over std. Plain slicing,
    so exported graphs (ONNX, torch.export) run it as it is."""
    x = to_rgb(x)[..., top:top + crop, left:left + crop].float() / 255
    if mean.shape[-1] > 1:
        mean = mean[..., top:top + crop, left:left + crop]
    return (x - mean) / std


class EvalCrops:
    """Test-time views: the center crop, or the paper's 10 crops (five patches and
    their horizontal reflections). Returns (B, V, 3, crop, crop) with V = 1 or 10."""

    def __init__(self, normalizer: Normalizer, crop: int, ten_crop: bool = False) -> None:
        self.normalizer, self.crop, self.ten_crop = normalizer, crop, ten_crop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size, n = x.shape[-1], self.normalizer
        mid = (size - self.crop) // 2
        offsets = ten_crop_offsets(size, self.crop) if self.ten_crop else [(mid, mid)]
        views = [normalized_window(x, n.mean, n.std, top, left, self.crop) for top, left in offsets]
        if self.ten_crop:
            views += [v.flip(-1) for v in views]  # the reflections: each patch read right to left
        return torch.stack(views, dim=1)
