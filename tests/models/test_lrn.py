import torch

from alexnet import create_model
from alexnet.models.lrn import local_response_norm, local_response_norm_reference


def lrn_by_formula(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """b_c = a_c / (k + alpha/n * sum_{j=max(0,c-n/2)}^{min(N-1,c+n/2)} a_j^2)^beta, one channel at a time."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - n // 2), min(channels - 1, c + n // 2)
        s = sum(a[:, j] ** 2 for j in range(lo, hi + 1))
        out[:, c] = a[:, c] / (k + alpha / n * s) ** beta
    return out


def test_lrn_matches_the_paper_formula():
    torch.manual_seed(0)
    a = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 60  # activations on the 0-255 scale
    expected = lrn_by_formula(a)
    torch.testing.assert_close(local_response_norm(a), expected)
    torch.testing.assert_close(create_model("paper").features.norm1(a), expected)
    # the normalisation is not a no-op at this scale
    assert (expected - a / 2 ** 0.75).abs().max() > 1e-3


def test_fast_lrn_gradient_matches_the_reference():
    torch.manual_seed(0)
    a = (torch.randn(2, 9, 4, 4, dtype=torch.float64) * 60).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 5, 1e-4, 0.75, 2.0), (a,))
    g = torch.randn(2, 9, 4, 4, dtype=torch.float64)
    (fast,) = torch.autograd.grad(local_response_norm(a), a, g)
    (ref,) = torch.autograd.grad(local_response_norm_reference(a), a, g)
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(local_response_norm_reference(a), lrn_by_formula(a))
    # Caffe's constant k=1, and an even window (off-centre, as in PyTorch), forward and backward
    even = lambda t: local_response_norm(t, 4, 1e-4, 0.75, 1.0)  # noqa: E731
    assert torch.autograd.gradcheck(even, (a,))
    torch.testing.assert_close(even(a), local_response_norm_reference(a, 4, 1e-4, 0.75, 1.0))
    torch.testing.assert_close(even(a), torch.nn.LocalResponseNorm(4, 1e-4, 0.75, 1.0)(a))


def test_lrn_within_towers_keeps_channels_last_and_matches_each_tower_alone():
    """--lrn-span tower: each half of the maps normalised alone, computed in the input's own
    layout (a reshape into (2N, C/2, H, W) would copy a channels-last tensor and return NCHW)."""
    torch.manual_seed(0)
    a = (torch.randn(2, 96, 7, 7, dtype=torch.float64) * 60).contiguous(memory_format=torch.channels_last)
    a.requires_grad_()
    norm = create_model("paper", lrn_span="tower").features.norm1
    y = norm(a)
    assert y.is_contiguous(memory_format=torch.channels_last)
    halves = [local_response_norm_reference(a[:, :48]), local_response_norm_reference(a[:, 48:])]
    torch.testing.assert_close(y, torch.cat(halves, 1))
    g = torch.randn_like(a)
    (fast,) = torch.autograd.grad(y, a, g)
    (ref,) = torch.autograd.grad(torch.cat(halves, 1), a, g)
    torch.testing.assert_close(fast, ref)
    assert fast.is_contiguous(memory_format=torch.channels_last)


def test_lrn_in_half_precision_does_not_overflow():
    """fp16 activations above 255 (their square overflows): LRN is computed in fp32."""
    torch.manual_seed(0)
    a = torch.rand(2, 16, 5, 5, dtype=torch.float64) * 600  # ReLU outputs on the 0-255 input scale
    y = local_response_norm(a.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), lrn_by_formula(a), rtol=2e-3, atol=1e-2)
    assert (y.double() - a / 2 ** 0.75).abs().max() > 1  # the normalisation is not a no-op here


def test_cuda_tensors_take_the_kernels_measured_fastest_unless_asked_otherwise(monkeypatch):
    """The band kernels were the fastest on an H200 (docs/benchmarks.md, 2026-11-27): 'auto' takes
    them where Triton is installed (the shift kernels on ROCm, whose GPUs do not all have the band
    kernels' tf32 products); ALEXNET_LRN names the others; without Triton, PyTorch's path."""
    import pytest

    from alexnet.errors import AlexNetError
    from alexnet.models import lrn, lrn_triton

    def decided(env):
        lrn.set_impl(None)
        if env is None:
            monkeypatch.delenv("ALEXNET_LRN", raising=False)
        else:
            monkeypatch.setenv("ALEXNET_LRN", env)
        try:
            return lrn._fused()
        finally:
            lrn.set_impl(None)

    monkeypatch.setattr(lrn_triton, "available", lambda: True)
    assert [decided(e) for e in (None, "auto", "triton-band", "triton", "torch")] == ["band", "band", "band",
                                                                                        "shift", ""]
    monkeypatch.setattr(torch.version, "hip", "6.4")  # ROCm: tf32 products only on some GPUs
    assert decided(None) == "shift" and decided("triton-band") == "band"
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(lrn_triton, "available", lambda: False)
    assert decided(None) == "" and decided("torch") == ""
    with pytest.raises(AlexNetError, match="Triton is not installed"):
        decided("triton-band")
    with pytest.raises(AlexNetError, match="ALEXNET_LRN must be one of"):
        decided("fast")
