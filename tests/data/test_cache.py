"""--cache: a packed split decoded once and gathered from memory (data/cache.py)."""

import pytest
import torch

from alexnet import AlexNetError
from alexnet.data import cache, packed
from alexnet.data.loader import Request, build
from conftest import write_tree


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
    assert cache.choose("none", 10**9, 256, cpu) == "none"
    monkeypatch.setattr(cache, "free_bytes", lambda where, device: 10 * 2**30)  # 10 GiB free, 5 to spare
    assert cache.choose("auto", 10_000, 256, cpu) == "host"  # 2 GB
    assert cache.choose("auto", 1_281_167, 256, cpu) == "none"  # ImageNet: 252 GB
    with pytest.raises(AlexNetError, match=r"--cache host needs 251.9 GB for 1,281,167 images of 256 px; the host "
                                           r"has 5.4 GB to spare"):
        cache.choose("host", 1_281_167, 256, cpu)
    with pytest.raises(AlexNetError, match="--cache gpu keeps the images in GPU memory; this run has no GPU"):
        cache.choose("gpu", 10, 32, cpu)
    assert cache.cache_bytes(1_281_167, 256) == 1_281_167 * 196_608
