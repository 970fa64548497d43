"""--cache: a packed split decoded once and gathered from memory (data/cache.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet import AlexNetError
from alexnet.data import cache, packed, ycc
from alexnet.data.loader import Request, build
from conftest import sample_photos, write_tree


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    tree = write_tree(tmp / "src", per_class=10, size=40)
    packed.prepare(tree, tmp / "dst", size=32, encoding="jpeg", workers=1, progress=False)
    return str(tmp / "dst")


def _epochs(splits, epochs=2):
    out = []
    for e in range(epochs):
        splits.train.set_epoch(e)
        out += [(b.images.clone(), b.labels.clone()) for b in splits.train]
    return out


def test_cached_batches_are_the_packed_batches_in_the_same_order(packed_dir):
    """The same images (bit for bit: the same decoder), labels and order over two shuffled
    epochs of a limited, held-out training split, as reading and decoding every epoch."""
    req = dict(splits=("train", "val"), batch_size=4, workers=1, limit_train=12, seed=5)
    plain = build(packed_dir, 32, torch.device("cpu"), Request(**req))
    cached = build(packed_dir, 32, torch.device("cpu"), Request(**req, cache="host"))
    assert isinstance(cached.train, cache.CachedBatches) and not isinstance(plain.train, cache.CachedBatches)
    a, b = _epochs(plain), _epochs(cached)
    assert len(a) == len(b) == 6
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert len(cached.val) == len(plain.val)
    for s in (plain, cached):
        s.train.close()
        s.val.close()


def test_where_the_cache_goes_and_a_request_that_does_not_fit(monkeypatch):
    cpu = torch.device("cpu")
    assert cache.choose("none", 10**9, 256, cpu) == ("none", "rgb")
    monkeypatch.setattr(cache, "free_bytes", lambda where, device: 10 * 2**30)  # 10 GiB free, 5.4 GB to spare
    assert cache.choose("auto", 10_000, 256, cpu, "auto") == ("host", "rgb")  # 2.0 GB
    assert cache.choose("auto", 30_000, 256, cpu, "auto") == ("host", "420")  # 5.9 GB as rgb, 2.9 GB as 420
    assert cache.choose("auto", 30_000, 256, cpu, "rgb") == ("none", "rgb")
    assert cache.choose("auto", 1_281_167, 256, cpu, "auto") == ("none", "auto")  # ImageNet: 252 GB, 126 GB
    with pytest.raises(AlexNetError, match=r"--cache host needs 251.9 GB for 1,281,167 images of 256 px \(rgb\); the "
                                           r"host has 5.4 GB to spare"):
        cache.choose("host", 1_281_167, 256, cpu)
    with pytest.raises(AlexNetError, match=r"--cache host needs 125.9 GB for 1,281,167 images of 256 px \(420\)"):
        cache.choose("host", 1_281_167, 256, cpu, "auto")
    with pytest.raises(AlexNetError, match="--cache gpu keeps the images in GPU memory; this run has no GPU"):
        cache.choose("gpu", 10, 32, cpu)
    with pytest.raises(AlexNetError, match="--cache-format must be one of auto, rgb, 420, got 'yuv'"):
        cache.choose("host", 10, 32, cpu, "yuv")
    assert cache.cache_bytes(1_281_167, 256) == 1_281_167 * 196_608
    assert cache.cache_bytes(1_281_167, 256, "420") == 1_281_167 * 98_304  # half
    assert cache.cache_bytes(1, 5, "420") == 25 + 2 * 9  # odd sides: colour planes of 3x3


def test_pinned_host_memory_is_counted_as_the_allocator_takes_it(monkeypatch):
    """Training on CUDA pins the host cache, and pinned blocks are powers of two, one per plane:
    10,000 images at 256 px as 420 take 1.07 + 0.54 GB pinned (0.98 GB unpinned)."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device name: no GPU is needed to size
    monkeypatch.setattr(cache, "free_bytes", lambda where, device: 3 * 10**9)  # 1.5 GB to spare
    assert cache.choose("host", 10_000, 256, cpu, "420") == ("host", "420")
    with pytest.raises(AlexNetError, match=r"--cache host needs 1.0 GB for 10,000 images of 256 px \(420\); the host "
                                           r"has 1.5 GB to spare"):
        cache.choose("host", 10_000, 256, cuda, "420")
    monkeypatch.setattr(cache, "free_bytes", lambda where, device: 3.3 * 10**9)  # 1.65 GB to spare
    assert cache.choose("host", 10_000, 256, cuda, "420") == ("host", "420")


def _pil_rgb_of_ycbcr(y: np.ndarray, cbcr_half: np.ndarray) -> torch.Tensor:
    """RGB (1, 3, S, S) made by PIL from a Y plane and colour planes constant on 2x2 blocks."""
    full = cbcr_half.repeat(2, 1).repeat(2, 2)[:, :y.shape[0], :y.shape[1]]
    ycc = np.stack([y, full[0], full[1]], -1).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(ycc, mode="YCbCr").convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0)


@pytest.mark.parametrize("size", [16, 15])
def test_420_planes_are_jpegs_ycbcr_and_come_back_as_the_same_rgb(size):
    """Against PIL's own YCbCr (JPEG's): an image whose colour is constant on 2x2 blocks loses
    only rounding in the 4:2:0 round trip; Y is PIL's Y, the colour planes PIL's averaged."""
    rng = np.random.default_rng(0)
    y = rng.integers(60, 196, (size, size))
    half = (size + 1) // 2
    cbcr = rng.integers(108, 148, (2, half, half))  # moderate colour: no channel clips in RGB
    rgb = _pil_rgb_of_ycbcr(y, cbcr)
    py, pc = ycc.to_420(rgb)
    assert py.shape == (1, size, size) and pc.shape == (1, 2, half, half) and py.dtype == torch.uint8
    assert (py.int() - torch.from_numpy(y)).abs().max() <= 1
    assert (pc[0].int() - torch.from_numpy(cbcr)).abs().max() <= 1
    back = ycc.from_420(py, pc)
    assert back.shape == rgb.shape and back.dtype == torch.uint8
    assert (back.int() - rgb.int()).abs().max() <= 3

    photo = torch.from_numpy(np.array(sample_photos()[0][:size, :size])).permute(2, 0, 1)[None]
    ref = np.asarray(Image.fromarray(photo[0].permute(1, 2, 0).numpy()).convert("YCbCr")).astype(float)
    py, pc = ycc.to_420(photo.contiguous())
    assert np.abs(py[0].numpy() - ref[..., 0]).max() <= 1
    ref_c = torch.nn.functional.pad(torch.from_numpy(ref[..., 1:]).permute(2, 0, 1)[None],
                                    (0, size % 2, 0, size % 2), mode="replicate")
    assert (pc.double() - torch.nn.functional.avg_pool2d(ref_c, 2)).abs().max() <= 1.5  # both rounded


def test_the_420_cache_gives_the_same_batches_a_few_levels_off_in_half_the_bytes(packed_dir):
    """The same labels and order as reading every epoch; the pixels those of the decoded JPEGs
    (themselves 4:2:0) within a few levels on average."""
    req = dict(splits=("train",), batch_size=4, workers=1, limit_train=12, seed=5)
    plain = build(packed_dir, 32, torch.device("cpu"), Request(**req))
    rgb = build(packed_dir, 32, torch.device("cpu"), Request(**req, cache="host", cache_format="rgb"))
    small = build(packed_dir, 32, torch.device("cpu"), Request(**req, cache="host", cache_format="420"))
    assert small.train.pixels.form == "420" and rgb.train.pixels.form == "rgb"
    assert sum(p.numel() for p in small.train.pixels.planes) * 2 == sum(p.numel() for p in rgb.train.pixels.planes)
    a, b = _epochs(plain), _epochs(small)
    assert len(a) == len(b) == 6
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    diff = torch.cat([(x[0].int() - y[0].int()).abs().flatten() for x, y in zip(a, b)]).float()
    assert diff.mean() < 2.5 and diff.max() < 48, (diff.mean(), diff.max())  # measured: 1.47 and 21
    for s in (plain, rgb, small):
        s.train.close()


def test_420_batches_can_stay_planes_for_the_fused_pass_and_read_as_the_same_rgb(packed_dir, monkeypatch):
    """Where the augmentation fuses (CUDA with Triton; here made to say so), the 4:2:0 cache hands
    the training split's batches over as planes, which read as the RGB batches of the same cache;
    the validation split, and the mean image's pass, read RGB."""
    from alexnet.data import augment_triton
    from alexnet.data.loader import image_sum
    from alexnet.data.transforms import to_rgb

    req = Request(splits=("train", "val"), batch_size=4, workers=1, limit_train=12, holdout=4, seed=5,
                  cache="host", cache_format="420")
    rgb = build(packed_dir, 32, torch.device("cpu"), req)
    monkeypatch.setattr(augment_triton, "fuses", lambda device: True)
    planes = build(packed_dir, 32, torch.device("cpu"), req)
    a, b = _epochs(rgb), [(ycc.Planes420(*p), l) for p, l in _epochs_planes(planes)]
    assert len(a) == len(b) == 2 * 3  # two epochs of 12 images in 4s
    for (x, lx), (p, lp) in zip(a, b):
        assert p.shape == x.shape and torch.equal(lx, lp) and torch.equal(to_rgb(p), x)
    assert all(isinstance(v.images, torch.Tensor) for v in planes.val)
    assert torch.equal(image_sum(planes.train, 6)[0], image_sum(rgb.train, 6)[0])
    for s in (rgb, planes):
        s.train.close()


def _epochs_planes(splits, epochs=2):
    out = []
    for e in range(epochs):
        splits.train.set_epoch(e)
        for batch in splits.train:
            assert isinstance(batch.images, ycc.Planes420)
            out.append(((batch.images.y.clone(), batch.images.chroma.clone()), batch.labels.clone()))
    return out
