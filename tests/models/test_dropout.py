"""models/dropout.py: the CPU's cheaper mask keeps nn.Dropout's distribution and gradient."""

import math

import pytest
import torch
from torch import nn

from alexnet import create_model
from alexnet.models.dropout import Dropout


@pytest.mark.parametrize("p", [0.5, 0.2, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_unit_is_kept_with_probability_one_minus_p_and_scaled_to_keep_the_mean(p, dtype):
    torch.manual_seed(0)
    x = (torch.rand(256, 1024) + 0.5).to(dtype).requires_grad_()
    y = Dropout(p).train()(x)
    kept = y != 0
    n = x.numel()
    share = kept.float().mean().item()
    assert abs(share - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)  # five standard errors of a binomial share
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    assert torch.equal(y[kept], x[kept] * scale)  # kept units scaled by 1 / (1 - p), as nn.Dropout's
    y.sum().backward()
    assert torch.equal(x.grad, kept.to(dtype) * scale)  # the gradient flows through the kept units only
    blocks = kept.float().view(-1, 4096).mean(1)  # no drift along the tensor: every block near 1 - p
    assert (blocks - (1 - p)).abs().max() < 6 * math.sqrt(p * (1 - p) / 4096)


def test_the_cpu_draws_its_mask_from_uniform_floats():
    """The cheap path is the one taken in training on the CPU: kept where a uniform draw is at
    least p (what plain nn.Dropout, which draws with bernoulli_, would not match)."""
    x = torch.rand(64, 512) + 0.5
    torch.manual_seed(7)
    ours = Dropout(0.3).train()(x)
    torch.manual_seed(7)
    assert torch.equal(ours, x * ((torch.rand(x.shape) >= 0.3).float() * (1 / 0.7)))


def test_the_mask_is_new_every_call_and_repeats_from_the_same_seed():
    drop, x = Dropout(0.5).train(), torch.ones(64, 512)
    torch.manual_seed(3)
    a, b = drop(x), drop(x)
    torch.manual_seed(3)
    assert not torch.equal(a, b) and torch.equal(drop(x), a)


def test_evaluation_and_the_edges_are_nn_dropouts():
    x = torch.randn(8, 16)
    assert torch.equal(Dropout(0.5).eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert isinstance(Dropout(0.5), nn.Dropout) and repr(Dropout(0.5)) == repr(nn.Dropout(0.5))


def test_every_network_drops_with_it_and_keeps_torchvisions_weight_names():
    import torchvision

    for variant in ("paper", "torchvision", "cifar-11pct"):
        drops = [m for m in create_model(variant, num_classes=10, dropout=0.5).modules() if isinstance(m, nn.Dropout)]
        assert drops and all(type(m) is Dropout for m in drops), variant
    ours = create_model("torchvision", num_classes=1000).state_dict()
    assert list(ours) == list(torchvision.models.alexnet().state_dict())
