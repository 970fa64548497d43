"""The fused augmentation kernel (data/augment_triton.py) against TrainAugment's tensor path,
on the CPU through Triton's interpreter (set before Triton compiles anything: a child process)."""

import textwrap

import pytest
from conftest import run_interpreted

pytest.importorskip("triton")

CHECKS = textwrap.dedent("""
    import json, torch
    from alexnet.data.transforms import Normalizer, TrainAugment

    torch.manual_seed(0)
    rows = []
    mean_image = torch.rand(3, 20, 20) * 0.5 + 0.25
    for channels in (3, 1):
        x = torch.randint(0, 256, (5, channels, 20, 20), dtype=torch.uint8)
        for norm_name, norm in (("mean-image", Normalizer.mean_image(mean_image)), ("channel", Normalizer.channel())):
            for lighting, random_crop, flip in ((0.1, True, True), (0.0, False, False)):
                for dtype, channels_last in ((torch.float32, False), (torch.bfloat16, True)):
                    kw = dict(random_crop=random_crop, flip=flip, lighting=lighting)
                    plain = TrainAugment(norm, 16, fused=False, **kw)(x, torch.Generator().manual_seed(3))
                    fused = TrainAugment(norm, 16, dtype=dtype, channels_last=channels_last, fused=True, **kw)(
                        x, torch.Generator().manual_seed(3))
                    rows.append(dict(channels=channels, norm=norm_name, lighting=lighting, dtype=str(dtype),
                                     shape=list(fused.shape), dtype_out=str(fused.dtype),
                                     channels_last=fused.is_contiguous(memory_format=torch.channels_last)
                                     and not fused.is_contiguous(),
                                     err=((fused.float() - plain).abs().max() / plain.abs().max()).item()))
    # a crop one pixel off: how far it lies from the fused output, against the tolerance
    norm = Normalizer.channel()
    shifted = TrainAugment(norm, 16, random_crop=False, flip=False, lighting=0.0, fused=False)(x[:, :, 1:, :].
                                                                                                 contiguous())
    fused = TrainAugment(norm, 16, random_crop=False, flip=False, lighting=0.0, fused=True)(x)
    off = ((fused - shifted).abs().max() / shifted.abs().max()).item()
    print(json.dumps(dict(rows=rows, off=off)))
""")


@pytest.fixture(scope="module")
def results():
    return run_interpreted(CHECKS)


def test_the_fused_pass_is_the_tensor_path_in_every_setting(results):
    """The same crops, flips, colour noise and normalisation from the same draws: equal in fp32,
    to bf16's rounding in bf16; written channels-last where asked."""
    assert len(results["rows"]) == 2 * 2 * 2 * 2
    for r in results["rows"]:
        tol = 1e-5 if r["dtype"] == "torch.float32" else 8e-3
        assert r["err"] < tol, r
        assert r["shape"] == [5, 3, 16, 16] and r["dtype_out"] == r["dtype"]
        assert r["channels_last"] == (r["dtype"] == "torch.bfloat16")


def test_the_tolerance_tells_a_crop_one_pixel_off(results):
    assert results["off"] > 100 * 1e-5
