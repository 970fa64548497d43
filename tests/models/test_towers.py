"""The paper's two-GPU split (towers.py), checked on the CPU with both towers on 'cpu'."""

import pytest
import torch

from alexnet import AlexNetError, create_model
from alexnet.training.checkpoint import load_model, read_weights
from alexnet.models.lrn import local_response_norm
from alexnet.models.towers import TwoTowerAlexNet, resolve_devices

CPU2 = ("cpu", "cpu")


def paper(num_classes=11, **kw):
    torch.manual_seed(0)
    return create_model("paper", num_classes=num_classes, dropout=0.0, init="kaiming", **kw)


def merged_grads(split: TwoTowerAlexNet) -> dict[str, torch.Tensor]:
    grads = {}
    for tower in split.towers:
        for name, p in tower.named_parameters():
            grads.setdefault(name, []).append(p.grad)
    return {k: torch.cat(v, 0) for k, v in grads.items()}


# pool5 1x1 (folded fc6), 3x3 (adaptive pool), and pool5 read on its own grid (the default below 227 px)
@pytest.mark.parametrize("size,grid", [(67, 6), (131, 6), (67, 1), (131, 3)])
def test_split_network_computes_the_single_device_function(size, grid):
    single = paper(pool5_grid=grid)
    split = TwoTowerAlexNet(single, CPU2)
    x = torch.randn(3, 3, size, size) * 60  # the paper's 0-255 input scale, where LRN matters
    out_single, out_split = single(x), split(x)
    assert out_split.shape == (3, 11)  # 11 classes: fc8 halves of 6 and 5
    torch.testing.assert_close(out_split, out_single, rtol=1e-5, atol=2e-6)
    out_single.square().sum().backward()
    out_split.square().sum().backward()
    grads = merged_grads(split)
    for name, p in single.named_parameters():
        g = grads[name.split(".", 1)[1]]  # features.conv1.weight -> conv1.weight
        assert (g - p.grad).norm() <= 1e-4 * p.grad.norm(), name


def test_lrn_borrows_the_other_towers_edge_channels():
    split = TwoTowerAlexNet(paper(), CPU2)
    a = torch.rand(2, 96, 5, 5) * 100
    whole = local_response_norm(a)
    halves = split._lrn([a[:, :48], a[:, 48:]])
    torch.testing.assert_close(torch.cat(halves, 1), whole)
    # Normalising each tower alone differs exactly at the 2 channels either side of the boundary.
    alone = torch.cat([local_response_norm(a[:, :48]), local_response_norm(a[:, 48:])], 1)
    differs = (alone - whole).abs().amax(dim=(0, 2, 3)) > 1e-3
    assert differs.nonzero().flatten().tolist() == [46, 47, 48, 49]


def test_state_dict_speaks_the_single_device_layout():
    single = paper(num_classes=10, lrn_k=1.0)
    split = TwoTowerAlexNet(single, CPU2)
    state = split.state_dict()
    assert list(state) == list(single.state_dict())
    assert all(torch.equal(state[k], v) for k, v in single.state_dict().items())
    assert split.towers[0].conv2.weight.shape == (128, 48, 5, 5) and split.towers[1].fc8.weight.shape == (5, 4096)
    other = paper(num_classes=10)
    torch.nn.init.normal_(other.features.conv3.weight)
    split.load_state_dict(other.state_dict())
    back = split.to_single()
    assert back.features.norm1.k == 1.0
    assert all(torch.equal(back.state_dict()[k], v) for k, v in other.state_dict().items())
    with pytest.raises(RuntimeError, match="classifier.fc8.weight"):
        split.load_state_dict(paper(num_classes=12).state_dict())


def test_frozen_layers_stay_frozen_and_head_is_fc8():
    from alexnet.training.train import freeze

    single = paper()
    freeze(single, "features")
    split = TwoTowerAlexNet(single, CPU2)
    trainable = {n for n, p in split.named_parameters() if p.requires_grad}
    assert trainable == {f"towers.{t}.{l}.{k}" for t in (0, 1) for l in ("fc6", "fc7", "fc8")
                         for k in ("weight", "bias")}
    assert {id(p) for p in split.head_parameters()} == {id(p) for t in split.towers for p in t.fc8.parameters()}


def test_device_flag_is_checked():
    assert resolve_devices("cpu, cpu") == (torch.device("cpu"), torch.device("cpu"))
    for bad in ("cpu", "cpu,cpu,cpu", "gpu0,gpu1"):
        with pytest.raises(AlexNetError, match="--model-parallel takes"):
            resolve_devices(bad)
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(AlexNetError, match=f"needs {2 * n + 2} CUDA devices"):
        resolve_devices("auto", local_rank=n)  # one more GPU pair than this machine has
    with pytest.raises(AlexNetError, match="does not have"):
        resolve_devices(f"cuda:0,cuda:{n}")
    # under torchrun, named GPUs would be every process's same pair; CPUs may be shared
    for spec in ("cuda:0,cuda:1", "cpu,cuda:1"):
        with pytest.raises(AlexNetError, match="every process on the same GPUs; use --model-parallel auto"):
            resolve_devices(spec, local_rank=1, world=2)
    assert resolve_devices("cpu,cpu", local_rank=1, world=2) == (torch.device("cpu"),) * 2
    with pytest.raises(AlexNetError, match="defined for the 'paper' network with ReLU"):
        TwoTowerAlexNet(create_model("torchvision"), CPU2)


def test_split_training_run_equals_the_single_device_run(tmp_path, fmnist_dir):
    """fit() with --model-parallel cpu,cpu: same weights as one device; the files load anywhere."""
    from alexnet.training.config import TrainConfig, apply_overrides
    from alexnet.training.train import fit

    common = dict(variant="paper", resize=76, crop=67, epochs=1, batch_size=16, limit_train=48, limit_val=32,
                  mean_samples=32, init="kaiming", random_crop=False, flip=False, lighting=0.0, dropout=0.0,
                  device="cpu", precision="fp32",
                  fashion_mnist_dir=fmnist_dir, log_every=1e9)
    one = fit(apply_overrides(TrainConfig(), {**common, "out": str(tmp_path / "one")}))
    two = fit(apply_overrides(TrainConfig(), {**common, "out": str(tmp_path / "two"), "model_parallel": "cpu,cpu"}))
    a = read_weights(tmp_path / "one" / "model.safetensors")[0]
    b = read_weights(tmp_path / "two" / "model.safetensors")[0]
    assert a.keys() == b.keys()
    init = paper(num_classes=10, pool5_grid=1).state_dict()  # at 67 px fc6 reads the 1x1 pool5 once
    for k in a:
        # Split convolutions round differently from whole ones, and 0-255 inputs make the rounding
        # large: measured 2e-4 of the distance moved after 3 steps (fc7 and fc8: 1e-6). The strict
        # check of the arithmetic is the single-step test above; this one checks the plumbing
        # (optimizer over both towers, merged checkpoints), where a fault moves weights by O(1).
        moved = (a[k] - init[k]).norm()
        assert (b[k] - a[k]).norm() <= 2e-3 * moved, k
    assert abs(one["history"][0]["train_loss"] - two["history"][0]["train_loss"]) < 1e-4
    model, _, meta = load_model(tmp_path / "two")  # a split run's weights load on one device
    assert meta["variant"] == "paper" and meta["num_params"] == 60_965_224 - 4097 * 990 - 4096 * 256 * 35
    # resuming changes nothing about the layout, and a different layout is refused in one line
    fit(TrainConfig(out=str(tmp_path / "two")), resume=True, overrides={"epochs": 2})
    with pytest.raises(AlexNetError, match="resume with the run's own --model-parallel"):
        fit(TrainConfig(out=str(tmp_path / "two")), resume=True, overrides={"epochs": 3, "model_parallel": ""})
    with pytest.raises(AlexNetError, match="torchvision network has none"):
        fit(apply_overrides(TrainConfig(), {**common, "variant": "torchvision", "out": str(tmp_path / "tv"),
                                            "model_parallel": "cpu,cpu"}))


def test_per_tower_lrn_is_the_two_gpu_network():
    """lrn_span='tower': each tower's maps normalised alone, on one device or split."""
    single = paper(lrn_span="tower")
    a = torch.rand(2, 96, 5, 5) * 100
    alone = torch.cat([local_response_norm(a[:, :48]), local_response_norm(a[:, 48:])], 1)
    torch.testing.assert_close(single.features.norm1(a), alone)
    assert not torch.allclose(paper().features.norm1(a), alone)  # the default spans all maps
    split = TwoTowerAlexNet(single, CPU2)
    assert split.to_single().features.norm1.groups == 2
    x = torch.randn(2, 3, 67, 67) * 60
    torch.testing.assert_close(split(x), single(x), rtol=1e-5, atol=2e-6)
    with pytest.raises(AlexNetError, match="lrn_span"):
        create_model("paper", lrn_span="gpu")


@pytest.mark.parametrize("change", [{}, {"activation": "tanh"}, {"overlap_pool": False}, {"norm": "batch"},
                                    {"norm": "none"}, {"ceil_pool": True}, {"pool5_grid": 3}])
def test_the_trainer_accepts_a_split_exactly_where_the_split_can_be_built(change):
    """`--model-parallel`'s check in the configuration and the split itself answer alike for
    each change of structure."""
    from alexnet.training.config import TrainConfig, apply_overrides, validate

    cfg = apply_overrides(TrainConfig(), {"variant": "paper", "model_parallel": "cpu,cpu", **change})
    try:
        validate(cfg)
        accepted = True
    except AlexNetError as e:
        assert "2012 structure" in str(e)
        accepted = False
    try:
        TwoTowerAlexNet(paper(**change), ("cpu", "cpu"))
        built = True
    except AlexNetError:
        built = False
    assert accepted == built == (change in ({}, {"norm": "none"}, {"pool5_grid": 3}))
