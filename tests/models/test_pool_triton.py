"""The Triton max pool (pool_triton.py) against PyTorch's, on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, set in a child process before Triton compiles anything)."""

import textwrap

import pytest
import torch
from conftest import run_interpreted

from alexnet import create_model
from alexnet.models import fastconv

pytest.importorskip("triton")

CHECKS = textwrap.dedent("""
    import json, torch
    import torch.nn.functional as F
    from alexnet import create_model
    from alexnet.models import fastconv, pool_triton as pt

    torch.manual_seed(0)
    rows = []
    # (kernel, stride, padding, ceil): the paper's 3x3/2 with floor and Caffe's ceil, padding, a
    # window no wider than its stride (one window a position), a stride of 1 (three a row); every
    # case channels-last in fp32, the paper's in both formats and both dtypes
    cases = [(3, 2, 0, False), (3, 2, 0, True), (3, 2, 1, False), (2, 2, 0, False), (3, 1, 1, True)]
    cl, nchw, fp32, bf16 = torch.channels_last, torch.contiguous_format, torch.float32, torch.bfloat16
    runs = [(c, cl, fp32) for c in cases] + [(cases[0], nchw, fp32), (cases[0], cl, bf16), (cases[0], nchw, bf16)]
    # a wider window (up to 9 windows a position, places up to 24) in fp16, ceil with padding
    runs += [((5, 2, 2, True), cl, torch.float16)]
    for ((k, s, p, ceil), fmt, dtype) in runs:
        # 36 channels: a whole tile of 32 and a part-filled one
        # small integers after a ReLU: most windows tie, many at 0, as real maps do
        x = (torch.randint(-2, 3, (2, 36, 9, 11)).float().relu()).to(dtype).contiguous(memory_format=fmt)
        x[0, 0, 0, 0] = float("nan")          # a NaN wins its windows
        x[1, 1, :4, :4] = float("-inf")        # windows of -inf keep their first place
        want, idx = F.max_pool2d(x.double(), k, s, p, ceil_mode=ceil, return_indices=True)
        g = torch.randn_like(want).to(dtype)
        # the gradient PyTorch routes, summed in fp64 from the same values, and the sum of
        # the magnitudes it adds (what bounds a sum's rounding)
        xr, xa = x.double().requires_grad_(), x.double().requires_grad_()
        F.max_pool2d(xr, k, s, p, ceil_mode=ceil).backward(g.double())
        F.max_pool2d(xa, k, s, p, ceil_mode=ceil).backward(g.double().abs())
        y, places = pt.forward(x, k, s, p, ceil)
        # PyTorch's flat index as a place inside the window
        oh = torch.arange(y.shape[2]).view(1, 1, -1, 1) * s - p
        ow = torch.arange(y.shape[3]).view(1, 1, 1, -1) * s - p
        want_places = (idx // x.shape[3] - oh) * k + (idx % x.shape[3] - ow)
        xt = x.clone().requires_grad_()
        pt.max_pool2d(xt, k, s, p, ceil).backward(g)
        eps = torch.finfo(dtype).eps
        rows.append(dict(case=[k, s, p, ceil], fmt=str(fmt), dtype=str(dtype),
                         out=bool(torch.equal(y.double().nan_to_num(), want.nan_to_num())
                                  and torch.equal(y.isnan(), want.isnan())),
                         places=bool(torch.equal(places.long(), want_places)),
                         grad=bool(((xt.grad.double() - xr.grad).abs() <= 2 * eps * xa.grad).all()),
                         formats=[y.is_contiguous(memory_format=fmt), places.is_contiguous(memory_format=fmt),
                                  xt.grad.is_contiguous(memory_format=fmt)],
                         dtypes=[str(y.dtype), str(places.dtype), str(xt.grad.dtype)]))

    # the paper network with the Triton pools: the same outputs and gradients as PyTorch's pools
    torch.manual_seed(1)
    model = create_model("paper", num_classes=10, dropout=0.0, init="kaiming")
    x = torch.randn(2, 3, 67, 67)
    def grads(m):
        m.zero_grad()
        out = m(x)
        out.square().sum().backward()
        return out, m.features[0].weight.grad.clone()
    want = grads(model)
    fastconv.use(model, pools="triton")
    got = grads(model)
    network = dict(swapped=sum(isinstance(m, fastconv.TritonMaxPool2d) for m in model.modules()),
                   out=((got[0] - want[0]).abs().max() / want[0].abs().max()).item(),
                   conv1_grad=((got[1] - want[1]).abs().max() / want[1].abs().max()).item())

    # a gradient in the other memory format than the output's (as a compiled graph may hand it
    # over), read through its own strides
    m = torch.randint(0, 3, (2, 36, 9, 11)).float().contiguous(memory_format=torch.channels_last)
    y, places = pt.forward(m, 3, 2)
    g = torch.randn(y.shape)  # contiguous, against the channels-last output
    xr = m.clone().requires_grad_()
    F.max_pool2d(xr, 3, 2).backward(g)
    other_strides = bool(torch.equal(pt.backward(g, places, 9, 11, 3, 2, 0, True), xr.grad))

    # what autograd keeps for the backward: the int8 places alone (PyTorch's pool keeps its
    # input and int64 indices)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(str(t.dtype)) or t, lambda t: t):
        pt.max_pool2d(torch.rand(1, 4, 9, 9, requires_grad=True), 3, 2)

    # torch.compile keeps each pool as one operator, forward and backward
    seen = []
    def backend(gm, inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm
    torch._dynamo.reset()
    torch.compile(model.features, backend=backend, fullgraph=True)(x)
    xc = torch.rand(1, 8, 9, 9, requires_grad=True)
    torch.compile(lambda t: pt.max_pool2d(t, 3, 2), backend="aot_eager")(xc).sum().backward()
    xd = xc.detach().clone().requires_grad_()
    F.max_pool2d(xd, 3, 2).sum().backward()
    # the operators each call dispatches, eagerly and through the registered operator itself
    def dispatched(pool):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            pool(torch.rand(1, 8, 9, 9, requires_grad=True)).sum().backward()
        return sorted({e.name for e in prof.events() if e.name.startswith("alexnet::")})
    dispatch = dict(eager=dispatched(lambda t: pt.max_pool2d(t, 3, 2)),
                    operator=dispatched(lambda t: pt.max_pool2d_op(t, 3, 2, 0, False)[0]))
    # what traces or transforms the call gets the operator, which it knows: make_fx's graph holds
    # it, and vmap over a batch of batches computes what the plain call computes
    from torch.fx.experimental.proxy_tensor import make_fx
    xf = torch.rand(2, 8, 9, 9)
    dispatch["make_fx"] = sorted({str(n.target) for n in make_fx(lambda t: pt.max_pool2d(t, 3, 2))(xf).graph.nodes
                                  if "alexnet" in str(n.target)})
    dispatch["vmap"] = bool(torch.equal(torch.func.vmap(lambda t: pt.max_pool2d(t, 3, 2))(xf[None]),
                                        pt.max_pool2d(xf, 3, 2)[None]))
    print(json.dumps(dict(rows=rows, network=network, kept=kept, graph=seen, other_strides=other_strides,
                          compiled_grad=bool(torch.equal(xc.grad, xd.grad)), dispatch=dispatch)))
""")


@pytest.fixture(scope="module")
def checked():
    return run_interpreted(CHECKS)


def test_the_same_maxima_places_and_gradients_as_pytorchs_pooling(checked):
    """Ties go to a window's first maximum, NaN wins, an all -inf window keeps its first place;
    each overlapping window's gradient reaches the place PyTorch's pool sends it, summed to the
    dtype's rounding; outputs keep the input's memory format and dtype, the places are int8."""
    assert len(checked["rows"]) == 9
    for row in checked["rows"]:
        assert row["out"] and row["places"] and row["grad"], row
        assert all(row["formats"]), row
        assert row["dtypes"][0] == row["dtypes"][2] == row["dtype"] and row["dtypes"][1] == "torch.int8", row


def test_a_gradient_in_another_memory_format_is_read_through_its_strides(checked):
    assert checked["other_strides"]


def test_the_network_with_triton_pools_computes_what_it_computed_before(checked):
    net = checked["network"]
    assert net["swapped"] == 3
    assert net["out"] < 1e-6 and net["conv1_grad"] < 1e-5, net


def test_the_backward_keeps_only_the_int8_places(checked):
    assert checked["kept"] == ["torch.int8"]


def test_compile_keeps_each_triton_pool_as_one_operator(checked):
    seen = checked["graph"]
    assert sum("alexnet.max_pool2d_triton" in t for t in seen) == 3, seen
    assert not any("max_pool2d_with" in t for t in seen)
    assert checked["compiled_grad"]


def test_eager_pools_run_the_kernels_without_the_operators_dispatch(checked):
    """Eagerly, the forward and backward run through a plain autograd.Function: the operator
    layer's host time is not paid on each call (the check sees it when the operator is called).
    What traces or transforms the call (make_fx, vmap) gets the operator."""
    assert checked["dispatch"]["eager"] == []
    assert checked["dispatch"]["operator"] == ["alexnet::max_pool2d_triton", "alexnet::max_pool2d_triton_backward"]
    assert checked["dispatch"]["make_fx"] == ["alexnet.max_pool2d_triton.default"] and checked["dispatch"]["vmap"]


def test_triton_pools_fall_back_to_pytorchs_where_their_kernels_cannot_run():
    """On a CPU tensor without the interpreter, the Triton pool is PyTorch's pool, bit for bit."""
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10, dropout=0.0, init="kaiming")
    x = torch.randn(2, 3, 99, 99)
    want = model(x)
    fastconv.use(model, pools="triton")
    assert torch.equal(model(x), want)


def test_pools_the_kernels_would_not_compute_as_pytorch_does_stay_pytorchs():
    """A rectangular pool is never swapped; inputs the kernels cannot take exactly (fp64, which
    they would compare in fp32; integers; unbatched maps; maps too small for one window; 2^31
    elements and more, past their int32 offsets; windows whose places overflow an int8) are left
    to PyTorch's pooling."""
    from alexnet.models import pool_triton as pt

    model = torch.nn.Sequential(torch.nn.MaxPool2d((3, 2), (2, 1)), torch.nn.MaxPool2d(3, 2))
    fastconv.use(model, pools="triton")
    assert type(model[0]) is torch.nn.MaxPool2d and type(model[1]) is fastconv.TritonMaxPool2d
    x = torch.rand(2, 4, 9, 9)
    assert pt.supports(x, 3, 2, 0, False)
    assert not pt.supports(x.double(), 3, 2, 0, False)
    assert not pt.supports((x * 9).int(), 3, 2, 0, False)
    assert not pt.supports(x[0], 3, 2, 0, False)
    assert not pt.supports(torch.rand(1, 1, 2, 9), 3, 2, 0, False)
    assert not pt.supports(x, 12, 2, 0, False)
    big = torch.empty(2**16, 2**10, 2**3, 2**2, device="meta")  # 2^31 elements, no memory
    assert not pt.supports(big, 3, 2, 0, False) and pt.supports(big[:-1], 3, 2, 0, False)


def test_the_kernels_compile_for_hopper_with_vector_loads_and_stores_and_no_spills(tmp_path):
    """benchmarks/triton_static.py, no GPU needed: every global load and store of both kernels
    moves a vector along the channels of a channels-last map (a mask that depended on the places
    once made the backward's gradient loads scalar, 2 bytes each)."""
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
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "triton_static.py"), "--only", "pool",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["kernel"] for r in rows] == ["pool_forward_bf16", "pool_backward_bf16"]
    for r in rows:
        assert r["spill_stores"] == r["spill_loads"] == 0, r
        assert r["loads"] and all(op.startswith(("ld.global.v2", "ld.global.v4")) for op in r["loads"]), r
        assert r["stores"] and all(op.startswith(("st.global.v2", "st.global.v4")) for op in r["stores"]), r
