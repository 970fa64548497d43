import math

import pytest
import torch
import torchvision

from alexnet import AlexNetError, VARIANTS, create_model, variant_info
from alexnet.models import pool5_size


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant,count", [("paper", 60_965_224), ("torchvision", 61_100_840),
                                           ("paper-half", 59_798_312), ("lenet5", 146_156),
                                           ("cifar-18pct", 1_104_328), ("cifar-11pct", 3_254_440)])
def test_exact_parameter_count(variant, count):
    assert _count(create_model(variant)) == count
    assert variant_info(variant).num_params_1000 == count


def test_lenet5_is_the_1998_network():
    """61,706 parameters at 10 classes on one channel; C1-S2-C3-S4 maps 6@28, 6@14, 16@10, 16@5
    from 32x32; scaled tanh (1.7159 tanh(2a/3)) and average subsampling, no max pooling."""
    from alexnet.models.lenet import ScaledTanh

    model = create_model("lenet5", num_classes=10, in_channels=1)
    assert _count(model) == 61_706
    x = torch.randn(2, 1, 32, 32)
    sizes = []
    for layer in model.features:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes[::3] == [(6, 28, 28), (16, 10, 10)] and sizes[2::3] == [(6, 14, 14), (16, 5, 5)]
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(ScaledTanh) == 4 and torch.nn.MaxPool2d not in kinds and torch.nn.ReLU not in kinds
    assert [m.out_features for m in model.classifier if isinstance(m, torch.nn.Linear)] == [120, 84, 10]
    assert ScaledTanh()(torch.tensor([1.5])).item() == pytest.approx(1.7159 * math.tanh(1.0))
    assert model.feature_layers == ("s4", "c5", "f6")
    assert model.forward_features(torch.randn(2, 1, 32, 32), "f6").shape == (2, 84)


def test_tanh_option_replaces_every_relu():
    model = create_model("paper", activation="tanh")
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(torch.nn.Tanh) == 7 and torch.nn.ReLU not in kinds
    assert _count(model) == 60_965_224  # a nonlinearity has no parameters
    assert model.options()["activation"] == "tanh"


def test_non_overlapping_pooling_keeps_the_map_sizes():
    plain, flat = create_model("paper").eval(), create_model("paper", overlap_pool=False).eval()
    pools = [m for m in flat.features if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    x = torch.randn(1, 3, 227, 227)
    shapes = lambda model: [tuple(x_.shape) for x_ in _trace_pools(model, x)]  # noqa: E731
    assert shapes(plain) == shapes(flat) == [(1, 96, 27, 27), (1, 256, 13, 13), (1, 256, 6, 6)]


@pytest.mark.parametrize("size", [71, 135, 199])
def test_at_even_map_sizes_ceil_pools_differ_in_overlap_alone(size):
    """With Caffe's rounding, at inputs whose maps are all even, 3x3/2 and 2x2/2 pooling give the
    same map sizes and both read every unit; with floor rounding at 67 px the 2x2 pools skip the
    maps' last rows and columns (two changes at once, which the option avoids)."""
    def covered(pool, n):  # which units of an n x n map reach some window's maximum
        x = torch.zeros(n * n, 1, n, n)
        x.view(n * n, -1)[torch.arange(n * n), torch.arange(n * n)] = 1.0
        return pool(x).flatten(1).amax(1).view(n, n).bool()

    x = torch.randn(1, 3, size, size)
    models = [create_model("paper", overlap_pool=o, ceil_pool=True, pool5_grid=pool5_size("paper", size, o, True))
              for o in (True, False)]
    maps = [[t.shape for t in _trace_pools(m, x)] for m in models]
    assert maps[0] == maps[1] and maps[0][-1][-1] == pool5_size("paper", size, True, True)
    for m in models:
        sizes = [t.shape[-1] for t in _inputs_of_pools(m, x)]
        assert all(n % 2 == 0 for n in sizes)
        assert all(covered(p, n).all() for p, n in zip(_pools(m), sizes))
    floor2x2 = create_model("paper", overlap_pool=False, pool5_grid=1)
    n = _inputs_of_pools(floor2x2, torch.randn(1, 3, 67, 67))[0].shape[-1]  # conv1's 15x15
    assert not covered(_pools(floor2x2)[0], n).all() and covered(_pools(models[0])[0], 16).all()


def test_pool5_size_is_the_map_the_network_makes():
    for overlap in (True, False):
        for ceil in (True, False):
            model = create_model("paper", num_classes=10, overlap_pool=overlap, ceil_pool=ceil)  # features: any size
            for size in (67, 71, 99, 135, 199, 224, 227):
                side = model.features(torch.zeros(1, 3, size, size)).shape[-1]
                assert pool5_size("paper", size, overlap, ceil) == side, (overlap, ceil, size)
    model = create_model("torchvision", num_classes=10)
    for size in (63, 71, 95, 224):
        assert pool5_size("torchvision", size) == model.features(torch.zeros(1, 3, size, size)).shape[-1], size
    small = create_model("torchvision", num_classes=10, pool5_grid=1)
    assert small.classifier[1].in_features == 256 and small(torch.zeros(2, 3, 71, 71)).shape == (2, 10)


def test_pool5_grid_sized_to_the_input_gives_fc6_each_value_once():
    """At 67 px pool5 is 1x1: on the paper's 6x6 grid fc6 holds 36 copies of each weight and,
    summed, they move 36 times as far per step as one weight would; a 1x1 grid has one."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 67, 67)
    steps = {}
    for grid in (6, 1):
        model = create_model("paper", num_classes=10, dropout=0.0, init="kaiming", pool5_grid=grid)
        assert model.classifier.fc6.in_features == 256 * grid * grid
        model(x).logsumexp(1).sum().backward()
        g = model.classifier.fc6.weight.grad.view(4096, 256, grid * grid).sum(-1)  # the effective weight's step
        steps[grid] = g.norm() / model.classifier.fc6.weight.grad.view(4096, 256, -1)[..., 0].norm()
    assert steps[6] == pytest.approx(36, rel=1e-2) and steps[1] == pytest.approx(1)  # 36x, not 9x or 1x


def _pools(model):
    return [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]


def _inputs_of_pools(model, x):
    out = []
    for layer in model.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            out.append(x)
        x = layer(x)
    return out


def _trace_pools(model, x):
    out = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, torch.nn.MaxPool2d):
            out.append(x)
    return out


def test_batch_norm_option_replaces_lrn_after_every_convolution():
    from alexnet.models.lrn import LocalResponseNorm

    model = create_model("paper", norm="batch")
    names = [n for n, _ in model.features.named_children()]
    convs = [n for n in names if n.startswith("conv")]
    assert all(names[names.index(c) + 1] == f"bn{c[-1]}" for c in convs)  # right after each convolution
    assert not any(isinstance(m, LocalResponseNorm) for m in model.modules())
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))  # cancelled by the norm
    assert _count(model) == 60_965_224 - (96 + 256 + 384 + 384 + 256) + 2 * (96 + 256 + 384 + 384 + 256)
    none = create_model("paper", norm="none")
    assert not any(isinstance(m, (LocalResponseNorm, torch.nn.BatchNorm2d)) for m in none.modules())
    assert create_model("paper", lrn=False).options()["norm"] == "none"  # the older spelling


def test_half_network_is_one_tower_of_half_the_kernels():
    model = create_model("paper-half")
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [48, 128, 192, 192, 256]  # conv5 keeps its 256 (footnote)
    assert all(c.groups == 1 for c in convs)
    assert model.classifier.fc6.out_features == model.classifier.fc7.out_features == 4096


OPTIONS = [(v, {}) for v in VARIANTS] + [("paper", {"activation": "tanh"}), ("paper", {"overlap_pool": False}),
                                         ("paper", {"norm": "batch"}), ("paper", {"init": "zero-bias"}),
                                         ("paper", {"pool5_grid": 2, "ceil_pool": True}),
                                         ("cifar-18pct", {"activation": "tanh"}), ("cifar-11pct", {"norm": "none"})]


@pytest.mark.parametrize("variant,options", OPTIONS, ids=lambda o: str(o) if o else "")
def test_every_variant_forward_backward(variant, options):
    info = variant_info(variant)
    model = create_model(variant, num_classes=7, **options)
    for size in (info.input_size, info.min_input_size):
        x = torch.randn(2, 3, size, size, requires_grad=True)
        out = model(x)
        assert out.shape == (2, 7)
        out.logsumexp(1).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()


def test_paper_shapes_follow_the_layer_table():
    model = create_model("paper").eval()
    x = torch.randn(1, 3, 227, 227)
    shapes = {}
    for name, layer in model.features.named_children():
        x = layer(x)
        shapes[name] = tuple(x.shape[1:])
    assert shapes["conv1"] == (96, 55, 55)
    assert shapes["pool1"] == (96, 27, 27)
    assert shapes["conv2"] == (256, 27, 27)
    assert shapes["pool2"] == (256, 13, 13)
    assert shapes["conv3"] == (384, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6)
    f = model.features
    assert (f.conv1.groups, f.conv2.groups, f.conv3.groups, f.conv4.groups, f.conv5.groups) == (1, 2, 1, 2, 2)


def test_towers_only_meet_at_conv3():
    """groups=2: tower 1's conv2 outputs ignore tower 2's conv1 maps."""
    model = create_model("paper").eval()
    x = torch.rand(1, 96, 27, 27)
    y = x.clone()
    y[:, 48:] += torch.rand_like(y[:, 48:])  # change only tower 2's inputs
    a, b = model.features.conv2(x), model.features.conv2(y)
    assert torch.equal(a[:, :128], b[:, :128])
    assert not torch.allclose(a[:, 128:], b[:, 128:])
    # conv3 crosses towers: its first half does depend on tower 2's maps
    u = torch.rand(1, 256, 13, 13)
    v = u.clone()
    v[:, 128:] += 1
    assert not torch.allclose(model.features.conv3(u)[:, :192], model.features.conv3(v)[:, :192])


def test_torchvision_state_dict_loads_and_matches_outputs():
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()
    ours = create_model("torchvision").eval()
    ours.load_state_dict(reference.state_dict())  # strict: same keys, same shapes
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
        assert torch.equal(ours.forward_features(x, "fc7"), reference.classifier[:6](
            torch.flatten(reference.avgpool(reference.features(x)), 1)))


def test_paper_initialisation():
    torch.manual_seed(0)
    model = create_model("paper")
    biases = {name: m.bias for name, m in model.named_modules() if hasattr(m, "bias") and m.bias is not None}
    for name in ("features.conv2", "features.conv4", "features.conv5", "classifier.fc6", "classifier.fc7"):
        assert torch.all(biases[name] == 1.0), name
    for name in ("features.conv1", "features.conv3", "classifier.fc8"):
        assert torch.all(biases[name] == 0.0), name
    w = model.classifier.fc6.weight
    assert abs(w.std().item() - 0.01) < 2e-4 and abs(w.mean().item()) < 1e-4
    caffe = create_model("paper", init="caffe")
    assert torch.all(caffe.features.conv2.bias == 0.1)
    zero = create_model("paper", init="zero-bias")
    assert all(torch.all(m.bias == 0) for m in zero.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert abs(zero.classifier.fc6.weight.std().item() - 0.01) < 2e-4


def test_feature_layers():
    model = create_model("paper", num_classes=10).eval()
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        fc7 = model.forward_features(x, "fc7")
        fc6 = model.forward_features(x, "fc6")
        pool5 = model.forward_features(x, "pool5")
        logits = model(x)
    assert fc7.shape == fc6.shape == (2, 4096) and pool5.shape == (2, 9216)
    assert (fc7 >= 0).all()  # after ReLU
    torch.testing.assert_close(model.classifier.fc8(fc7), logits)
    with pytest.raises(AlexNetError, match="unknown layer"):
        model.forward_features(x, "conv9")


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(AlexNetError, match="unknown variant 'vgg'"):
        create_model("vgg")
    with pytest.raises(AlexNetError, match="num_classes"):
        create_model("paper", num_classes=0)


def test_reset_classifier():
    model = create_model("torchvision")
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(torch.randn(1, 3, 224, 224)).shape == (1, 5)


@pytest.mark.parametrize("grid", [6, 2])
def test_small_input_fc6_shortcut_is_exact(grid):
    """Below 99 px pool5 is 1x1: the folded fc6 gives the plain path's outputs and gradients."""
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10, dropout=0.0, init="kaiming", pool5_grid=grid).double()
    x = torch.randn(4, 3, 67, 67, dtype=torch.float64)
    assert model.features(x).shape[-2:] == (1, 1)
    fast = model(x)
    fast.square().sum().backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain = model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    plain.square().sum().backward()
    torch.testing.assert_close(fast, plain)
    for a, p in zip(fast_grads, model.parameters()):
        torch.testing.assert_close(a, p.grad)
    torch.testing.assert_close(model.forward_features(x, "fc7"),
                               model.classifier[:5](torch.flatten(model.avgpool(model.features(x)), 1)))


def _tensors_at(model, names, x, inputs):
    """What the named layers receive (``inputs``) or return, in one forward pass."""
    seen, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def keep(m, args, out=None, name=name):
            seen[name] = (args[0] if inputs else out).detach().clone()
        hooks.append(modules[name].register_forward_pre_hook(keep) if inputs else modules[name].register_forward_hook(keep))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _inputs_of(model, names, x):
    return _tensors_at(model, names, x, inputs=True)


def _outputs_of(model, names, x):
    return _tensors_at(model, names, x, inputs=False)


def test_dropout_sits_where_each_paper_puts_it_in_train_mode():
    """paper (2012): dropout after fc6 and fc7, none before fc6. torchvision ("one weird
    trick"): dropout before fc6 and fc7, none before fc8. A dropped unit is 0, a kept one x2."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 227, 227) * 60
    paper = create_model("paper", num_classes=10, init="kaiming").train()
    torch.manual_seed(1)
    got = _inputs_of(paper, ["classifier.fc6", "classifier.fc7", "classifier.fc8"], x)
    torch.manual_seed(1)
    relu = _outputs_of(paper, ["features.pool5", "classifier.relu6", "classifier.relu7"], x)
    torch.testing.assert_close(got["classifier.fc6"].flatten(1), relu["features.pool5"].flatten(1))  # no dropout
    for fc, r in (("classifier.fc7", "classifier.relu6"), ("classifier.fc8", "classifier.relu7")):
        kept = got[fc] != 0
        torch.testing.assert_close(got[fc][kept], 2 * relu[r][kept])
        alive = relu[r] > 0
        assert 0.4 < (~kept & alive).sum() / alive.sum() < 0.6  # half the active units dropped
    tv = create_model("torchvision", num_classes=10).train()
    y = torch.randn(4, 3, 224, 224)
    torch.manual_seed(1)
    got = _inputs_of(tv, ["classifier.1", "classifier.4", "classifier.6"], y)
    torch.manual_seed(1)
    before = _outputs_of(tv, ["avgpool", "classifier.2", "classifier.5"], y)
    for fc, src in (("classifier.1", "avgpool"), ("classifier.4", "classifier.2")):
        kept, alive = got[fc] != 0, before[src].flatten(1) != 0
        torch.testing.assert_close(got[fc][kept], 2 * before[src].flatten(1)[kept])
        assert 0.4 < (~kept & alive).sum() / alive.sum() < 0.6  # half the non-zero inputs dropped
    torch.testing.assert_close(got["classifier.6"], before["classifier.5"])  # no dropout before fc8


def test_lenet5_initialisation_is_lecuns():
    model = create_model("lenet5", num_classes=10)
    for layer in (model.features.c1, model.features.c3, model.classifier.c5, model.classifier.f6):
        bound = 2.4 / layer.weight[0].numel()  # fan-in (LeCun et al. 1998, appendix C)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert torch.all(layer.bias == 0)


def test_structural_options_survive_weights_files_and_old_configs():
    from alexnet.training.config import ModelConfig, adopt_model_options, from_dict
    from alexnet.models.towers import TwoTowerAlexNet

    m = ModelConfig()
    adopt_model_options(m, create_model("paper", norm="batch", activation="tanh", overlap_pool=False, pool5_grid=2,
                                        ceil_pool=True).options())
    assert (m.norm, m.activation, m.overlap_pool, m.pool5_grid, m.ceil_pool) == ("batch", "tanh", False, 2, True)
    adopt_model_options(m, {"lrn": False, "lrn_k": 2.0})  # a file from before the norm option
    assert (m.norm, m.activation, m.overlap_pool, m.pool5_grid, m.ceil_pool) == ("none", "relu", True, 6, False)
    assert from_dict({"model": {"lrn": False}}).model.norm == "none"
    from alexnet.training.config import TrainConfig, apply_overrides, validate

    for variant in ("torchvision", "lenet5"):  # options a network does not have are refused, not ignored
        for flag, value in (("activation", "tanh"), ("norm", "none"), ("overlap_pool", False)):
            with pytest.raises(AlexNetError, match=f"the {variant} network's layers are fixed"):
                validate(apply_overrides(TrainConfig(), {"variant": variant, flag: value}))
    with pytest.raises(AlexNetError, match="two-tower split"):
        TwoTowerAlexNet(create_model("paper", activation="tanh", num_classes=4), ("cpu", "cpu"))
