import torch

from alexnet.data.transforms import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, EvalCrops, Normalizer, TrainAugment,
                                     lighting_offsets, ten_crop_offsets)


def coordinate_image(size: int) -> torch.Tensor:
    """uint8 (1, 3, size, size): channel 0 = row, channel 1 = column, channel 2 = 7."""
    r = torch.arange(size).view(size, 1).expand(size, size)
    c = torch.arange(size).view(1, size).expand(size, size)
    return torch.stack([r, c, torch.full_like(r, 7)]).unsqueeze(0).to(torch.uint8)


IDENTITY = Normalizer(torch.zeros(3, 1, 1), torch.full((3, 1, 1), 1 / 255))  # float pixel values back


def test_pca_lighting_has_the_stated_covariance():
    g = torch.Generator().manual_seed(0)
    sigma = 0.1
    offsets = lighting_offsets(200_000, sigma, g).double()
    cov = torch.cov(offsets.T)
    v, lam = IMAGENET_EIGVEC.double(), IMAGENET_EIGVAL.double()
    expected = v @ torch.diag((sigma * lam) ** 2) @ v.T  # Var(alpha_i lambda_i) along p_i
    torch.testing.assert_close(cov, expected, rtol=0.03, atol=2e-7)
    assert offsets.mean(0).abs().max() < 3e-4


def test_ten_crop_geometry():
    size, crop = 12, 8
    views = EvalCrops(IDENTITY, crop, ten_crop=True)(coordinate_image(size)).round()
    assert views.shape == (1, 10, 3, crop, crop)
    corners = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    assert ten_crop_offsets(size, crop) == corners
    for v, (top, left) in enumerate(corners):
        plain, mirrored = views[0, v], views[0, v + 5]
        assert plain[0, 0, 0] == top and plain[1, 0, 0] == left  # rows/cols start at the offset
        assert plain[0, -1, 0] == top + crop - 1 and plain[1, 0, -1] == left + crop - 1
        assert torch.equal(mirrored, plain.flip(-1))  # the reflection of the same patch
    center = EvalCrops(IDENTITY, crop)(coordinate_image(size)).round()
    assert center.shape == (1, 1, 3, crop, crop) and torch.equal(center[0, 0], views[0, 4])


def test_random_crops_and_flips_stay_inside_and_are_seeded():
    size, crop, b = 16, 10, 256
    x = coordinate_image(size).expand(b, -1, -1, -1)
    aug = TrainAugment(IDENTITY, crop, lighting=0.0)
    out = aug(x, torch.Generator().manual_seed(1)).round()
    rows, cols = out[:, 0], out[:, 1]
    # every crop is a contiguous window: rows increase by one, columns by +1 or -1 (flipped)
    assert torch.all(rows[:, 1:, 0] - rows[:, :-1, 0] == 1)
    step = cols[:, 0, 1:] - cols[:, 0, :-1]
    flipped = step[:, 0] < 0
    assert torch.all(step == torch.where(flipped, -1.0, 1.0)[:, None])
    assert 0.35 < flipped.float().mean() < 0.65
    assert len(set(rows[:, 0, 0].tolist())) == size - crop + 1  # all offsets are drawn
    again = aug(x, torch.Generator().manual_seed(1)).round()
    other = aug(x, torch.Generator().manual_seed(2)).round()
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_mean_image_subtraction_is_at_the_crop_position():
    size, crop = 10, 6
    mean = torch.rand(3, size, size)
    norm = Normalizer.mean_image(mean)
    x = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    aug = TrainAugment(norm, crop, lighting=0.0)
    g = torch.Generator().manual_seed(3)
    out = aug(x, g)
    full = (x.float() / 255 - mean) * 255  # Caffe: subtract the mean image, then crop
    for i in range(4):
        found = any(
            torch.allclose(out[i], full[i, :, t:t + crop, l:l + crop].flip(-1) if f else full[i, :, t:t + crop, l:l + crop],
                           atol=1e-3)
            for t in range(size - crop + 1) for l in range(size - crop + 1) for f in (False, True))
        assert found


def test_grayscale_becomes_three_channels():
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    out = TrainAugment(IDENTITY, 8, random_crop=False, flip=False, lighting=0.0)(x)
    assert out.shape == (2, 3, 8, 8)
    assert torch.equal(out.round(), x.float().expand(-1, 3, -1, -1))


def test_lighting_adds_the_pca_offsets_on_the_normalisers_scale():
    """TrainAugment with colour noise minus without it: each image's PCA offset (drawn from the
    same generator state), divided by the normaliser's std, the same at every pixel."""
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    norm = Normalizer.channel()
    lit = TrainAugment(norm, 8, random_crop=False, flip=False, lighting=0.5)(x, torch.Generator().manual_seed(0))
    plain = TrainAugment(norm, 8, random_crop=False, flip=False, lighting=0.0)(x, torch.Generator().manual_seed(0))
    offsets = lighting_offsets(4, 0.5, torch.Generator().manual_seed(0))  # (4, 3) in [0, 1] RGB
    expected = (offsets / norm.std.view(1, 3)).view(4, 3, 1, 1).expand(-1, -1, 8, 8)
    torch.testing.assert_close(lit - plain, expected)
    assert offsets.abs().min() > 0
