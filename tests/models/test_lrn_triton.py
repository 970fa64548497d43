"""The fused Triton LRN (lrn_triton.py) against the fp64 formula, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, which must be set before Triton compiles anything: the
checks run in a child process)."""

import textwrap

import pytest
from conftest import run_interpreted

pytest.importorskip("triton")

CHECKS = textwrap.dedent("""
    import json, torch
    from alexnet.models import lrn_triton as lt
    from alexnet.models.lrn import local_response_norm_reference as ref

    def reference(x, size, alpha, beta, k, groups):
        return torch.cat([ref(p, size, alpha, beta, k) for p in x.chunk(groups, 1)], 1)

    torch.manual_seed(0)
    rows = []
    # (channels, groups, size, alpha, beta, k): the paper's across all maps and within each tower,
    # cifar-11pct's (9 maps, k 1), a window wider than a group's edge, channels not a power of 2
    # and an even window (4: [c-2, c+1], whose backward sums over the mirrored [c-1, c+2])
    cases = [(12, 1, 5, 1e-4, 0.75, 2.0), (12, 2, 5, 1e-4, 0.75, 2.0), (18, 1, 9, 1e-3, 0.75, 1.0),
             (10, 2, 9, 1e-2, 0.75, 1.0), (20, 2, 5, 1e-2, 0.6, 1.5), (12, 2, 4, 1e-2, 0.75, 1.0)]
    for ch, groups, size, alpha, beta, k in cases:
        for fmt in ("contiguous", "channels_last"):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                x64 = (torch.randn(2, ch, 5, 7, dtype=torch.float64) * 120).relu()  # the 0-255 scale's ReLU maps
                x = x64.to(dtype)
                x = x.contiguous(memory_format=torch.channels_last) if fmt == "channels_last" else x.contiguous()
                xr = x.double().requires_grad_()
                want = reference(xr, size, alpha, beta, k, groups)
                g64 = torch.randn_like(want)
                want.backward(g64)
                xt = x.clone().requires_grad_()
                y = lt.local_response_norm(xt, size, alpha, beta, k, groups)
                y.backward(g64.to(dtype))
                rows.append(dict(case=[ch, groups, size, alpha, beta, k], fmt=fmt, dtype=str(dtype),
                                 out_dtype=str(y.dtype), grad_dtype=str(xt.grad.dtype),
                                 same_strides=y.stride() == x.stride() and xt.grad.stride() == x.stride(),
                                 finite=bool(torch.isfinite(y).all() and torch.isfinite(xt.grad).all()),
                                 fwd=((y.double() - want).abs().max() / want.abs().max()).item(),
                                 bwd=((xt.grad.double() - xr.grad).abs().max() / xr.grad.abs().max()).item()))
    # a window one channel off ([c-1, c+3] for [c-2, c+2]) at the paper's constants: how far it lies
    # from the kernel's output, against the tolerance the checks above allow
    import torch.nn.functional as F
    x = (torch.randn(2, 12, 5, 7, dtype=torch.float64) * 120).relu()
    sq = F.pad(x.square().unsqueeze(1), (0, 0, 0, 0, 1, 3))
    off = x * (F.avg_pool3d(sq, (5, 1, 1), stride=1).squeeze(1) * 1e-4 + 2.0).pow(-0.75)
    y = lt.local_response_norm(x.float(), 5, 1e-4, 0.75, 2.0, 1).double()
    rows.append(dict(case="off by one", fwd=((y - off).abs().max() / off.abs().max()).item()))

    # torch.compile keeps it as one operation: a full graph whose only work is alexnet::lrn
    seen = []
    def backend(gm, inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm
    f = torch.compile(lambda t: lt.local_response_norm(t, 5, 1e-4, 0.75, 2.0, 2), backend=backend, fullgraph=True)
    f(torch.rand(1, 4, 3, 3))
    # and its backward through AOT autograd (the path compile takes), against the formula
    x = (torch.randn(1, 6, 3, 3) * 120).relu().requires_grad_()
    g = torch.compile(lambda t: lt.local_response_norm(t, 5, 1e-2, 0.75, 1.0, 1), backend="aot_eager")
    g(x).square().sum().backward()
    xr = x.detach().double().requires_grad_()
    ref(xr, 5, 1e-2, 0.75, 1.0).square().sum().backward()
    compiled_bwd = ((x.grad.double() - xr.grad).abs().max() / xr.grad.abs().max()).item()
    print(json.dumps(dict(rows=rows, graph=seen, compiled_bwd=compiled_bwd)))
""")


@pytest.fixture(scope="module")
def results():
    return run_interpreted(CHECKS)


# Relative to the largest value: fp32 arithmetic inside; bf16 and fp16 also round the inputs,
# outputs and incoming gradients (8 and 11 bits of mantissa).
TOLERANCE = {"torch.float32": 1e-5, "torch.float16": 2e-3, "torch.bfloat16": 1.6e-2}


def test_forward_and_backward_match_the_fp64_formula_in_every_dtype_layout_and_span(results):
    rows = [r for r in results["rows"] if r["case"] != "off by one"]
    assert len(rows) == 6 * 2 * 3
    for r in rows:
        tol = TOLERANCE[r["dtype"]]
        assert r["fwd"] < tol and r["bwd"] < tol, r
        assert r["out_dtype"] == r["grad_dtype"] == r["dtype"] and r["same_strides"] and r["finite"], r


def test_the_tolerance_catches_a_window_off_by_one_channel(results):
    off = next(r for r in results["rows"] if r["case"] == "off by one")
    assert off["fwd"] > 100 * TOLERANCE["torch.float32"]


def test_compile_keeps_the_fused_lrn_as_one_operation(results):
    assert [t for t in results["graph"] if "alexnet" in t] == ["alexnet.lrn.default"]
    assert all("pow" not in t and "pool" not in t for t in results["graph"]), results["graph"]
    assert results["compiled_bwd"] < TOLERANCE["torch.float32"]
