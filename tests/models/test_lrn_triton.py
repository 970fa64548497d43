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
    # and for the band kernels' chunks of 16 channels: 40 maps over 9 x 11 positions (several tiles
    # of positions, three chunks, the last part-filled), the paper's towers (two groups of three
    # whole chunks) and a 33-wide window (the widest that two neighbouring chunks hold)
    cases = [(12, 1, 5, 1e-4, 0.75, 2.0), (12, 2, 5, 1e-4, 0.75, 2.0), (18, 1, 9, 1e-3, 0.75, 1.0),
             (10, 2, 9, 1e-2, 0.75, 1.0), (20, 2, 5, 1e-2, 0.6, 1.5), (12, 2, 4, 1e-2, 0.75, 1.0),
             (40, 1, 5, 1e-3, 0.75, 2.0), (96, 2, 5, 1e-4, 0.75, 2.0), (40, 1, 33, 1e-3, 0.75, 2.0)]
    spatial = {40: (9, 11), 96: (3, 5)}
    # every layout and dtype for the paper's constants (across all maps and within each tower, 12
    # and 96 maps); the other shapes in both layouts in fp32, and channels-last in bf16 (how a GPU
    # trains)
    every = [(f, d) for f in ("contiguous", "channels_last") for d in (torch.float32, torch.bfloat16, torch.float16)]
    some = [("contiguous", torch.float32), ("channels_last", torch.float32), ("channels_last", torch.bfloat16)]
    # (the 33-wide window is the band kernels' limit; the shift kernels' wide windows are the 9s)
    runs = [(c, n) for c in cases for n in lt.KERNELS if not (c[2] == 33 and n == "shift")]
    for (ch, groups, size, alpha, beta, k), kernel in runs:
        hw = spatial.get(ch, (5, 7))
        for fmt, dtype in every if (ch, size) in ((12, 5), (96, 5)) and k == 2.0 else some:
            x64 = (torch.randn(2, ch, *hw, dtype=torch.float64) * 120).relu()  # the 0-255 scale's ReLU maps
            x = x64.to(dtype)
            x = x.contiguous(memory_format=torch.channels_last) if fmt == "channels_last" else x.contiguous()
            xr = x.double().requires_grad_()
            want = reference(xr, size, alpha, beta, k, groups)
            g64 = torch.randn_like(want)
            want.backward(g64)
            xt = x.clone().requires_grad_()
            y = lt.local_response_norm(xt, size, alpha, beta, k, groups, kernel)
            y.backward(g64.to(dtype))
            rows.append(dict(case=[ch, groups, size, alpha, beta, k], kernel=kernel, fmt=fmt, dtype=str(dtype),
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
    for kernel in lt.KERNELS:
        y = lt.local_response_norm(x.float(), 5, 1e-4, 0.75, 2.0, 1, kernel).double()
        rows.append(dict(case="off by one", kernel=kernel, fwd=((y - off).abs().max() / off.abs().max()).item()))

    # torch.compile keeps each kernel as one operation: a full graph whose only work is its op
    graphs, compiled_bwd = {}, {}
    for kernel in lt.KERNELS:
        seen = graphs.setdefault(kernel, [])
        def backend(gm, inputs, seen=seen):
            seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
            return gm
        torch._dynamo.reset()
        f = torch.compile(lambda t: lt.local_response_norm(t, 5, 1e-4, 0.75, 2.0, 2, kernel), backend=backend,
                          fullgraph=True)
        f(torch.rand(1, 4, 3, 3))
        # and its backward through AOT autograd (the path compile takes), against the formula
        x = (torch.randn(1, 6, 3, 3) * 120).relu().requires_grad_()
        g = torch.compile(lambda t: lt.local_response_norm(t, 5, 1e-2, 0.75, 1.0, 1, kernel), backend="aot_eager")
        g(x).square().sum().backward()
        xr = x.detach().double().requires_grad_()
        ref(xr, 5, 1e-2, 0.75, 1.0).square().sum().backward()
        compiled_bwd[kernel] = ((x.grad.double() - xr.grad).abs().max() / xr.grad.abs().max()).item()
    # the operators an eager call dispatches, against a call of the registered operator itself
    def dispatched(norm):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            norm(torch.rand(1, 8, 3, 3, requires_grad=True)).sum().backward()
        return sorted({e.name for e in prof.events() if e.name.startswith("alexnet::")})
    dispatch = {kernel: dispatched(lambda t: lt.local_response_norm(t, 5, 1e-4, 0.75, 2.0, 1, kernel))
                for kernel in lt.KERNELS}
    dispatch["operator"] = dispatched(lambda t: lt.lrn_band_op(t, 5, 1e-4, 0.75, 2.0, 1))
    print(json.dumps(dict(rows=rows, graph=graphs, compiled_bwd=compiled_bwd, dispatch=dispatch)))
""")


@pytest.fixture(scope="module")
def results():
    return run_interpreted(CHECKS)


# Relative to the largest value: fp32 arithmetic inside; bf16 and fp16 also round the inputs,
# outputs and incoming gradients (8 and 11 bits of mantissa).
TOLERANCE = {"torch.float32": 1e-5, "torch.float16": 2e-3, "torch.bfloat16": 1.6e-2}


def test_forward_and_backward_match_the_fp64_formula_in_every_dtype_layout_and_span(results):
    rows = [r for r in results["rows"] if r["case"] != "off by one"]
    assert len(rows) == 3 * 2 * 6 + 6 * 2 * 3 - 3 and {r["kernel"] for r in rows} == {"shift", "band"}
    assert {r["dtype"] for r in rows} == set(TOLERANCE) and {r["fmt"] for r in rows} == {"contiguous", "channels_last"}
    for r in rows:
        tol = TOLERANCE[r["dtype"]]
        assert r["fwd"] < tol and r["bwd"] < tol, r
        assert r["out_dtype"] == r["grad_dtype"] == r["dtype"] and r["same_strides"] and r["finite"], r


def test_the_tolerance_catches_a_window_off_by_one_channel(results):
    offs = [r for r in results["rows"] if r["case"] == "off by one"]
    assert len(offs) == 2 and all(off["fwd"] > 100 * TOLERANCE["torch.float32"] for off in offs)


@pytest.mark.parametrize("kernel,op", [("shift", "alexnet.lrn.default"), ("band", "alexnet.lrn_band.default")])
def test_compile_keeps_the_fused_lrn_as_one_operation(results, kernel, op):
    graph = results["graph"][kernel]
    assert [t for t in graph if "alexnet" in t] == [op]
    assert all("pow" not in t and "pool" not in t for t in graph), graph
    assert results["compiled_bwd"][kernel] < TOLERANCE["torch.float32"]


def test_eager_calls_run_the_kernels_without_the_operators_dispatch(results):
    """Eagerly, both kernels' forward and backward run through a plain autograd.Function, not
    the operator layer (whose host time each call would pay; the check sees it when called)."""
    assert results["dispatch"]["shift"] == results["dispatch"]["band"] == []
    assert results["dispatch"]["operator"] == ["alexnet::lrn_band", "alexnet::lrn_band_backward"]


def test_the_band_kernels_compile_for_hopper_with_wide_loads_tensor_core_products_and_no_spills(tmp_path):
    """benchmarks/triton_static.py, no GPU needed: what made the shift kernels slow on an H200
    (scalar loads along a channels-last map's channels) must not return in the band kernels."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("this Triton has no ptxas")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "static.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "triton_static.py"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["kernel"]: r for r in json.loads(out.read_text())["rows"]}
    band = [r for name, r in rows.items() if name.startswith("band")]
    assert len(band) == 4
    for r in band:
        assert r["spill_stores"] == r["spill_loads"] == 0, r
        assert r["loads"] and all(op.startswith("ld.global.v4") for op in r["loads"]), r
        assert any(op.startswith("wgmma") for op in r["products"]), r
    # and the measure sees the difference: the shift kernels' shifted loads are narrower
    assert any(not op.startswith("ld.global.v4") for op in rows["shift_forward_bf16_C64"]["loads"])
