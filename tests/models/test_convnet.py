"""cuda-convnet's CIFAR-10 networks, layer by layer against their layer files and formulas."""

import pytest
import torch
import torch.nn.functional as F

from alexnet import create_model
from alexnet.training.config import OptimConfig
from alexnet.models.convnet import LocallyConnected2d, WithinMapNorm
from alexnet.models.lrn import LocalResponseNorm
from alexnet.training.train import param_groups


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_are_the_layer_files():
    """By hand from the layer files, 10 classes. layers-18pct: conv 5*5*3*32+32, 5*5*32*32+32,
    5*5*32*64+64, fc 4*4*64*10+10 = 2,432 + 25,632 + 51,264 + 10,250 = 89,578.
    conv-local-11pct: 4,864 + 102,464 + local3 36*(9*64)*64+36*64 = 1,329,408 + local4
    36*(9*64)*32+36*32 = 664,704 + fc 6*6*32*10+10 = 11,530: 2,112,970."""
    assert _count(create_model("cifar-18pct", num_classes=10)) == 89_578
    assert _count(create_model("cifar-11pct", num_classes=10)) == 2_112_970


def test_maps_shrink_as_cuda_convnet_pools():
    """Pooling windows run off the edge (outputsX = ceil((size - 3) / 2) + 1): 32 -> 16 -> 8 -> 4
    and 24 -> 12 -> 6, where floor division would give 15, 7, 3 and 11, 5."""
    for variant, size, shapes in (("cifar-18pct", 32, {"pool1": 16, "pool2": 8, "pool3": 4}),
                                  ("cifar-11pct", 24, {"pool1": 12, "pool2": 6, "local4": 6})):
        model = create_model(variant, num_classes=10)
        x, seen = torch.randn(1, 3, size, size), {}
        for name, layer in model.features.named_children():
            x = layer(x)
            seen[name] = x.shape[-1]
        assert {k: seen[k] for k in shapes} == shapes
    pool = create_model("cifar-18pct").features.pool2  # an average pool: divides by the pixels inside
    assert torch.equal(pool(torch.ones(1, 1, 16, 16)), torch.ones(1, 1, 8, 8))


def test_rnorm_is_the_within_map_formula():
    """b = a (1 + scale/9 * sum of a^2 over the 3x3 window, clipped at the edges)^-pow, by loops."""
    a = torch.randn(1, 2, 5, 5, dtype=torch.float64) * 3
    norm = WithinMapNorm(size=3, scale=0.5, power=0.75)
    out = norm(a)
    for c in range(2):
        for y in range(5):
            for x in range(5):
                window = a[0, c, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                expected = a[0, c, y, x] * (1 + 0.5 / 9 * (window ** 2).sum()) ** -0.75
                assert out[0, c, y, x].item() == pytest.approx(expected.item(), rel=1e-12)


def test_cmrnorm_is_the_across_map_formula():
    """The 11pct net's cmrnorm: b_f = a_f (1 + 0.001/9 * sum over maps f-4..f+4 of a^2)^-0.75."""
    a = torch.randn(1, 16, 2, 2, dtype=torch.float64) * 20
    out = create_model("cifar-11pct").features.rnorm1.double()(a)
    assert isinstance(create_model("cifar-11pct").features.rnorm1, LocalResponseNorm)
    for f in range(16):
        s = (a[0, max(0, f - 4):f + 5] ** 2).sum(0)
        torch.testing.assert_close(out[0, f], a[0, f] * (1 + 0.001 / 9 * s) ** -0.75)
    assert not any(isinstance(m, LocalResponseNorm) for m in create_model("cifar-11pct", norm="none").modules())
    assert not any(isinstance(m, WithinMapNorm) for m in create_model("cifar-18pct", norm="none").modules())


def test_a_locally_connected_layer_is_a_convolution_per_position():
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, in_size=5, kernel_size=3, padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    out = layer(x)
    padded = F.pad(x, (1, 1, 1, 1))
    for y, xx in ((0, 0), (2, 3), (4, 4)):
        p = y * 5 + xx
        patch = padded[:, :, y:y + 3, xx:xx + 3].reshape(2, -1)  # (B, in*k*k), channel-major like unfold
        torch.testing.assert_close(out[:, :, y, xx], patch @ layer.weight[p].T + layer.bias[p])
    shared = torch.randn(4, 3, 3, 3, dtype=torch.float64)  # the same filters everywhere: a convolution
    with torch.no_grad():
        layer.weight.copy_(shared.reshape(1, 4, 27).expand(25, 4, 27))
        layer.bias.zero_()
    torch.testing.assert_close(layer(x), F.conv2d(x, shared, padding=1))


def test_init_is_each_layers_initw_and_biases_zero():
    model = create_model("cifar-11pct", num_classes=10)  # --init auto: the layer file's
    f = model.features
    for layer, std in ((f.conv1, 1e-4), (f.conv2, 0.01), (f.local3, 0.04), (model.classifier.fc10, 0.01)):
        assert layer.weight.std().item() == pytest.approx(std, rel=0.1)
        assert torch.all(layer.bias == 0)


def test_each_layer_decays_as_its_params_file_says():
    """layer-params-conv-local-11pct: wc 0 for conv1/conv2, 0.004 for local3/local4, 0.01 for fc10;
    biases never decay."""
    model = create_model("cifar-11pct", num_classes=10)
    decay = {}
    for g in param_groups(model, OptimConfig(weight_decay=0.004)):
        for p in g["params"]:
            decay[id(p)] = g["weight_decay"]
    by_name = {n: decay[id(p)] for n, p in model.named_parameters()}
    assert by_name["features.conv1.weight"] == by_name["features.conv2.weight"] == 0
    assert by_name["features.local3.weight"] == by_name["features.local4.weight"] == pytest.approx(0.004)
    assert by_name["classifier.fc10.weight"] == pytest.approx(0.01)
    assert all(v == 0 for n, v in by_name.items() if n.endswith("bias"))


def test_summary_counts_the_locally_connected_layers_work():
    """local3: 36 positions x 64 filters x (3*3*64) inputs = 1,327,104 multiply-accumulates an image."""
    from alexnet.models.summary import summarize

    rows = {r.name: r for r in summarize(create_model("cifar-11pct", num_classes=10), 24)}
    assert rows["features.local3"].macs == 36 * 64 * 576 and rows["features.local4"].macs == 36 * 32 * 576


def test_a_trained_cifar_network_exports_to_onnx(tmp_path):
    """The locally connected layers are built from slices and matrix products that ONNX has."""
    from alexnet.training.config import TrainConfig, apply_overrides
    from alexnet.exporter import export
    from alexnet.training.train import fit
    from conftest import write_cifar_release

    data = write_cifar_release(tmp_path / "cifar-10-batches-bin", per_class_train=8, per_class_test=2)
    fit(apply_overrides(TrainConfig(), dict(data=str(data), variant="cifar-11pct", resize=32, epochs=1,
                                            batch_size=16, mean_samples=32, out=str(tmp_path / "run"))))
    assert export(tmp_path / "run", "onnx", tmp_path / "m.onnx")["max_abs_diff"] < 1e-4


def test_non_overlapping_pools_give_the_same_maps_from_2x2_windows():
    """Both networks' 3x3/2 pools become 2x2/2 with the same output sizes (32 -> 16 -> 8 -> 4,
    24 -> 12 -> 6): only the overlap changes."""
    for variant, size in (("cifar-18pct", 32), ("cifar-11pct", 24)):
        overlap, plain = (create_model(variant, num_classes=10, overlap_pool=o) for o in (True, False))
        plain.load_state_dict(overlap.state_dict())  # the same weights fit: no layer changed size
        x = torch.randn(2, 3, size, size)
        assert overlap(x).shape == plain(x).shape
        pools = [m for m in plain.features if isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
        assert pools and all(m.kernel_size == 2 and m.stride == 2 for m in pools)
        assert not torch.allclose(overlap(x), plain(x))


def test_two_towers_keep_conv2_and_the_normalisations_inside_each_tower():
    """With towers=2 a change to conv1's second-tower kernels moves no first-tower map of
    conv2 (nor of the normalisations around it) and does move the second tower's; local3
    reads both towers."""
    torch.manual_seed(0)
    model = create_model("cifar-11pct", num_classes=10, towers=2, init="kaiming").eval()
    x = torch.randn(2, 3, 24, 24)
    upto_pool2 = model.features[:list(dict(model.features.named_children())).index("pool2") + 1]
    before = upto_pool2(x)
    with torch.no_grad():
        model.features.conv1.weight[32:] += torch.randn_like(model.features.conv1.weight[32:])
    after = upto_pool2(x)
    torch.testing.assert_close(after[:, :32], before[:, :32], rtol=0, atol=0)
    assert (after[:, 32:] - before[:, 32:]).abs().max() > 1e-3
    one = create_model("cifar-11pct", num_classes=10, init="kaiming")
    assert model.features.conv2.groups == 2 and one.features.conv2.groups == 1
    assert model.features.local3.weight.shape == one.features.local3.weight.shape  # crosses the towers


def test_dropout_before_fc10_only_when_asked_and_only_in_training():
    """Default: none (the layer files have none). dropout=0.5: each of fc10's inputs is 0 or
    twice its value, about half of them 0; in eval mode the identity."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 24, 24)
    plain = create_model("cifar-11pct", num_classes=10).train()
    dropped = create_model("cifar-11pct", num_classes=10, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    seen = {}
    for name, model in (("plain", plain), ("dropped", dropped)):
        model.classifier.fc10.register_forward_hook(lambda m, i, o, name=name: seen.update({name: i[0]}))
    assert torch.equal(plain(x), plain(x))  # nothing random in the plain network
    dropped.train()(x)
    live = seen["plain"] != 0
    kept = seen["dropped"][live] != 0
    assert 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(seen["dropped"][live][kept], 2 * seen["plain"][live][kept])
    torch.testing.assert_close(dropped.eval()(x), plain.eval()(x))
