"""GPU paths: skipped without CUDA (see conftest.py); run them on a GPU machine with `pytest -m gpu`."""

import pytest
import torch
import torch.nn.functional as F

from alexnet import create_model
from alexnet.lrn import local_response_norm

pytestmark = pytest.mark.gpu


def test_compiled_lrn_matches_the_reference():
    x = torch.randn(8, 96, 55, 55, device="cuda") * 50
    fast = torch.compile(local_response_norm)
    torch.testing.assert_close(fast(x), torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_bf16_channels_last_step_agrees_with_fp32(variant):
    torch.manual_seed(0)
    model = create_model(variant, init="kaiming").cuda().eval()
    x = torch.randn(16, 3, model.info.input_size, model.info.input_size, device="cuda")
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = cl(x.contiguous(memory_format=torch.channels_last)).float()
    assert F.cosine_similarity(ref, fast).min() > 0.99


def test_gpu_jpeg_decode_matches_cpu(tmp_path):
    from conftest import write_tree
    from alexnet.data import packed
    from alexnet.data.loader import build

    tree = write_tree(tmp_path / "src", per_class=4, size=64)
    packed.prepare(tree, tmp_path / "dst", size=64, workers=1, progress=False)
    cpu = build(str(tmp_path / "dst"), 64, 4, torch.device("cuda"), workers=0).val
    gpu = build(str(tmp_path / "dst"), 64, 4, torch.device("cuda"), workers=0, gpu_decode=True).val
    for a, b in zip(cpu, gpu):
        assert a.images.shape == b.images.shape
        assert (a.images.float() - b.images.float()).abs().mean() < 2  # decoders may round differently


def test_two_tower_split_on_cuda_matches_one_device():
    """The paper's model-parallel split on cuda:0 and cuda:1 (both on cuda:0 with one GPU)."""
    from alexnet.towers import TwoTowerAlexNet

    torch.manual_seed(0)
    single = create_model("paper", num_classes=1000, dropout=0.0, init="kaiming").cuda()
    second = "cuda:1" if torch.cuda.device_count() > 1 else "cuda:0"
    split = TwoTowerAlexNet(single, ("cuda:0", second))
    x = torch.randn(8, 3, 227, 227, device="cuda") * 60
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # plain fp32 to compare
    try:
        with torch.no_grad():
            reference = single(x)
            torch.testing.assert_close(split(x), reference, rtol=1e-4, atol=1e-5)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fast = split(x).float()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert F.cosine_similarity(reference, fast).min() > 0.99
