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

    # 4:2:0 planes, converted as the kernel reads them, against ycc.from_420 then the tensor path;
    # odd sides (colour planes of ceil(S/2)), and an image of exact .5 ties (B = Y + 1.772 (Cb - 128)
    # is Y + 221.5 at Cb 253), where round-half-even and round-half-up differ
    from alexnet.data.ycc import Planes420, from_420, to_420
    ycc = []
    for size in (20, 21):
        y, chroma = to_420(torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8))
        y[3] = torch.randint(0, 34, (size, size), dtype=torch.uint8)
        chroma[3, 0] = 253
        planes = Planes420(y, chroma)
        for norm_name, norm in (("mean-image", Normalizer.mean_image(torch.rand(3, size, size))),
                                ("channel", Normalizer.channel())):
            plain = TrainAugment(norm, 16, fused=False)(planes, torch.Generator().manual_seed(5))
            same = TrainAugment(norm, 16, fused=False)(from_420(y, chroma), torch.Generator().manual_seed(5))
            fused = TrainAugment(norm, 16, fused=True)(planes, torch.Generator().manual_seed(5))
            bf16 = TrainAugment(norm, 16, dtype=torch.bfloat16, channels_last=True, fused=True)(
                planes, torch.Generator().manual_seed(5))
            ycc.append(dict(size=size, norm=norm_name, plain_is_rgb_path=torch.equal(plain, same),
                            err=((fused - plain).abs().max() / plain.abs().max()).item(),
                            bf16_err=((bf16.float() - plain).abs().max() / plain.abs().max()).item(),
                            bf16_channels_last=bf16.dtype == torch.bfloat16
                            and bf16.is_contiguous(memory_format=torch.channels_last) and not bf16.is_contiguous()))
    cb = chroma[3, 0].float().repeat_interleave(2, -2).repeat_interleave(2, -1)[:size, :size] - 128
    ties = y[3].float() + 1.772 * cb
    half_up_differs = bool(((ties.frac() == 0.5) & (ties.floor() % 2 == 0)).any())
    print(json.dumps(dict(rows=rows, off=off, ycc=ycc, half_up_differs=half_up_differs)))
""")


@pytest.fixture(scope="module")
def results():
    return run_interpreted(CHECKS)


def test_the_fused_pass_is_the_tensor_path_in_every_setting(results):
    """The same crops, flips, colour noise and normalisation from the same draws: in fp32 within a
    rounding (the kernel multiplies by 255's reciprocal, as CUDA's tensor path does, where the
    CPU's divides), to bf16's rounding in bf16; written channels-last where asked."""
    assert len(results["rows"]) == 2 * 2 * 2 * 2
    for r in results["rows"]:
        tol = 1e-5 if r["dtype"] == "torch.float32" else 8e-3
        assert r["err"] < tol, r
        assert r["shape"] == [5, 3, 16, 16] and r["dtype_out"] == r["dtype"]
        assert r["channels_last"] == (r["dtype"] == "torch.bfloat16")


def test_the_fused_pass_converts_420_planes_as_the_cache_does(results):
    """A 4:2:0 batch, converted to RGB inside the fused pass, gives the pixels that converting first
    (``ycc.from_420``) and then augmenting gives: the same rounding, ties included, and the
    colour sample of each pixel's own 2x2 block, odd sides too."""
    assert [(r["size"], r["norm"]) for r in results["ycc"]] == [(20, "mean-image"), (20, "channel"),
                                                               (21, "mean-image"), (21, "channel")]
    for r in results["ycc"]:
        assert r["plain_is_rgb_path"] and r["err"] < 1e-5, r
        assert r["bf16_err"] < 8e-3 and r["bf16_channels_last"], r  # as the network reads it on a GPU
    assert results["half_up_differs"]  # the tie image tells round-half-even from round-half-up


def test_the_tolerance_tells_a_crop_one_pixel_off(results):
    assert results["off"] > 100 * 1e-5


def test_the_420_kernel_compiles_for_hopper_without_fused_multiply_adds():
    """benchmarks/triton_static.py, no GPU needed: compiled for sm_90a as it is launched, the
    4:2:0 conversion keeps the tensor path's separate multiply and add (an FMA rounds once, and
    moves a pixel across a rounding boundary now and then); compiled with fusion allowed, the
    same kernel has them, so the count tells. The normalisation's divisions are IEEE-rounded
    (Triton's `/` is not), so that the GPU's fused pass rounds as the tensor path there does."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("this Triton has no ptxas")
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    code = textwrap.dedent(f"""
        import json, sys, tempfile
        from pathlib import Path
        sys.path.insert(0, {str(bench)!r})
        import triton_static as ts
        rows = {{}}
        with tempfile.TemporaryDirectory() as tmp:
            for name, fn, pointers, constants, warps, *options in ts.kernels():
                if name.startswith("augment"):
                    rows[name] = ts.report(name, fn, pointers, constants, warps, Path(tmp), *options)
                    rows[name + "_fused"] = ts.report(name, fn, pointers, constants, warps, Path(tmp),
                                                      {{"enable_fp_fusion": True}})
        print(json.dumps(rows))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert rows["augment_420_bf16"]["fma"] == 0 and rows["augment_420_bf16_fused"]["fma"] > 0
    for name in ("augment_rgb_bf16", "augment_420_bf16"):
        assert rows[name]["spill_stores"] == rows[name]["spill_loads"] == 0, rows[name]
        # every division rounded as PyTorch's on CUDA: none of Triton's approximate ones
        assert set(rows[name]["divisions"]) == {"div.rn.f32"}, rows[name]["divisions"]
