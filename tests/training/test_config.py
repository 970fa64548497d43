"""Every network trains from its defaults: only the data, the sizes and a small budget are given
(a default chosen for one network once made another diverge)."""

import math

import pytest

from alexnet import VARIANTS
from alexnet.training.config import TrainConfig, apply_overrides
from alexnet.training.train import fit

SIZES = {"paper": (76, 67), "paper-half": (76, 67), "torchvision": (67, 63), "lenet5": (36, 32),
         "cifar-18pct": (32, 32), "cifar-11pct": (32, 24)}


def _first_and_last(tmp_path, data: dict, variant: str) -> tuple[list[float], float, float]:
    resize, crop = SIZES[variant]
    result = fit(apply_overrides(TrainConfig(), {
        **data, "variant": variant, "resize": resize, "crop": crop, "epochs": 2, "limit_train": 1536,
        "limit_val": 128, "mean_samples": 512, "workers": 0, "trace_steps": True, "log_every": 1e9,
        "out": str(tmp_path / variant)}))
    losses = [x for h in result["history"] for x in h["trace_loss"]]
    quarter = len(losses) // 4
    return losses, sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter


def test_the_variants_cover_every_network():
    assert set(SIZES) == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(SIZES))
def test_every_network_trains_from_its_defaults_on_fashion_mnist(tmp_path, fmnist_dir, variant):
    losses, first, last = _first_and_last(tmp_path, {"fashion_mnist_dir": fmnist_dir}, variant)
    assert all(math.isfinite(x) for x in losses)
    assert last < first - 0.05, (first, last)


@pytest.mark.parametrize("variant", sorted(SIZES))
def test_every_network_trains_from_its_defaults_on_cifar10(tmp_path, variant):
    from conftest import write_cifar_release

    data = write_cifar_release(tmp_path / "cifar-10-batches-bin", per_class_train=160, per_class_test=4)
    losses, first, last = _first_and_last(tmp_path, {"data": str(data)}, variant)
    assert all(math.isfinite(x) for x in losses)
    assert last < first - 0.05, (first, last)


@pytest.mark.parametrize("variant,crop,grid", [("paper", 67, 1), ("paper", 71, 1), ("paper", 227, 6),
                                               ("paper-half", 67, 1), ("torchvision", 63, 6), ("torchvision", 224, 6)])
def test_fc6_reads_each_pool5_value_once_in_the_paper_networks_and_on_torchvisions_6x6(variant, crop, grid):
    """The paper networks' fc6 reads pool5 on pool5's own grid, the paper's 6x6 at 227 px (on a 6x6
    grid a 1x1 pool5 reaches fc6 36 times and fc6 learns 36 times too fast: at 67 px the paper
    network's loss rose from 2.0 to 2.5 on CIFAR-10); torchvision keeps its 6x6 layer at every size,
    so that its weights fit."""
    from alexnet import create_model
    from alexnet.training.config import model_options, resolve_defaults

    cfg = resolve_defaults(apply_overrides(TrainConfig(), {"variant": variant, "resize": crop, "crop": crop}))
    assert cfg.model.pool5_grid == grid
    model = create_model(variant, 10, **model_options(cfg.model))
    fc6 = model.classifier.fc6 if variant != "torchvision" else model.classifier[1]
    assert fc6.in_features == 256 * grid * grid


@pytest.mark.parametrize("variant,dropout", [("paper", 0.5), ("paper-half", 0.5), ("torchvision", 0.5),
                                             ("lenet5", 0.0), ("cifar-18pct", 0.0), ("cifar-11pct", 0.0)])
def test_dropout_defaults_to_each_networks_own_and_a_given_value_wins(variant, dropout):
    """The paper's 0.5 for the AlexNets; none for LeNet-5 and the cifar networks' layer files."""
    from alexnet.training.config import model_options, resolve_defaults
    from torch import nn

    cfg = apply_overrides(TrainConfig(), {"variant": variant})
    assert resolve_defaults(cfg).model.dropout == dropout
    if variant != "lenet5":
        assert model_options(cfg.model)["dropout"] == dropout  # also where nothing resolved the config first
        given = apply_overrides(TrainConfig(), {"variant": variant, "dropout": 0.3})
        assert resolve_defaults(given).model.dropout == 0.3
        from alexnet import create_model
        model = create_model(variant, 10, **model_options(given.model))
        assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}


def test_towers_are_for_the_cifar_11pct_network_alone():
    from alexnet import AlexNetError
    from alexnet.training.config import validate

    validate(apply_overrides(TrainConfig(), {"variant": "cifar-11pct", "towers": 2}))
    for variant, towers, message in (("paper", 2, "--towers is for the cifar-11pct network"),
                                     ("cifar-18pct", 2, "--towers is for the cifar-11pct network"),
                                     ("cifar-11pct", 3, "--towers must be 1 or 2")):
        with pytest.raises(AlexNetError, match=message):
            validate(apply_overrides(TrainConfig(), {"variant": variant, "towers": towers}))


def test_a_saved_config_from_before_the_dropout_option_keeps_training_without_dropout():
    """Older run directories recorded the AlexNets' 0.5 for every network; LeNet-5 and the cifar
    networks ignored it. Resumed (or re-checked by reproduce), they stay without dropout."""
    from alexnet.training.config import from_dict, to_dict

    for variant, dropout in (("cifar-11pct", 0.0), ("lenet5", 0.0), ("paper", 0.5)):
        old = to_dict(apply_overrides(TrainConfig(), {"variant": variant, "dropout": 0.5}))
        del old["model"]["towers"]  # the field that came with the option
        assert from_dict(old).model.dropout == dropout
        new = to_dict(apply_overrides(TrainConfig(), {"variant": variant, "dropout": 0.5}))
        assert from_dict(new).model.dropout == 0.5  # asked for now: kept


def test_a_saved_config_from_before_the_pool5_grid_option_keeps_the_6x6_grid():
    """Runs saved before the option read pool5 on the paper's 6x6 grid at every size: resumed, or
    re-checked by reproduce, they keep it (their fc6 has 9,216 inputs); saved now, the grid is
    recorded, resolved."""
    from alexnet.training.config import from_dict, resolve_defaults, to_dict

    old = to_dict(apply_overrides(TrainConfig(), {"variant": "paper", "resize": 76, "crop": 67}))
    del old["model"]["pool5_grid"]
    assert resolve_defaults(from_dict(old)).model.pool5_grid == 6
    new = to_dict(resolve_defaults(apply_overrides(TrainConfig(), {"variant": "paper", "resize": 76, "crop": 67})))
    assert new["model"]["pool5_grid"] == 1 and resolve_defaults(from_dict(new)).model.pool5_grid == 1


def test_a_saved_config_from_before_the_bias_multipliers_keeps_training_as_it_began():
    """Runs saved before the bias multipliers trained biases at the weights' rate and decay:
    read back (resumed, evaluated, re-checked by reproduce) they keep 1 and 1; saved now, the
    multipliers come back as recorded."""
    from alexnet.training.config import from_dict, to_dict

    old = to_dict(TrainConfig())
    del old["optim"]["bias_lr_mult"], old["optim"]["bias_decay_mult"]
    assert (from_dict(old).optim.bias_lr_mult, from_dict(old).optim.bias_decay_mult) == (1.0, 1.0)
    new = to_dict(apply_overrides(TrainConfig(), {"bias_lr_mult": 1.5, "bias_decay_mult": 0.25}))
    assert (from_dict(new).optim.bias_lr_mult, from_dict(new).optim.bias_decay_mult) == (1.5, 0.25)
