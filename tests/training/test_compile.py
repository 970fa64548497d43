"""--compile on the CPU: every network traces as one graph, and the compiled LRN is the formula.

Dynamo traces the same Python whatever the device, so a graph break or a tracing error shows
here first. What the GPU compiles from it (Triton kernels, cuDNN's choices, channels-last
layouts) differs and is checked only on a GPU (tests/test_gpu.py); its speed is a benchmark.
"""

import shutil

import pytest
import torch

from alexnet import TwoTowerAlexNet, create_model
from alexnet.models.lrn import local_response_norm, local_response_norm_reference


@pytest.mark.parametrize("name", ["paper", "torchvision", "paper split in two towers"])
def test_network_compiles_as_one_graph_with_the_same_results(name):
    torch.manual_seed(0)
    model = create_model(name.split()[0], num_classes=10, dropout=0.0, init="kaiming")
    if "split" in name:
        model = TwoTowerAlexNet(model, ("cpu", "cpu"))
    # aot_eager: dynamo's graph and AOTAutograd's backward, run by eager kernels (no compiler needed)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 67, 67) * 60
    out = compiled(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = model(x)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="inductor's CPU code generation needs a C++ compiler")
def test_inductor_compiled_lrn_matches_the_formula():
    x = (torch.randn(4, 96, 27, 27) * 50).requires_grad_()
    y = torch.compile(local_response_norm, fullgraph=True)(x)
    y.square().sum().backward()
    grad = x.grad.clone()
    x.grad = None
    ref = local_response_norm_reference(x)
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)
    assert (grad - x.grad).norm() <= 1e-5 * x.grad.norm()
