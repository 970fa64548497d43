"""alexnet explain: the attribution methods light up the only region that can change the
output, and the command writes its pictures for every variant."""

import json

import pytest
import torch
from torch import nn

from alexnet import explain as ex

pytest.importorskip("captum")


class OneRegion(nn.Module):
    """A network whose output depends only on the pixels of rows 8-15, columns 16-23 of a
    32x32 input (everything else is multiplied by 0 first), with bias-free convolutions so that
    no map is non-zero outside that region's reach."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., 8:16, 16:24] = 1
        self.register_buffer("mask", mask)
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.features(x * self.mask).mean((2, 3)))


def _outside(heat, grow):
    """The share of |heat| outside the region grown by ``grow`` pixels (what it can reach)."""
    inside = torch.zeros_like(heat, dtype=torch.bool)
    inside[max(8 - grow, 0):16 + grow, max(16 - grow, 0):24 + grow] = True
    total = heat.abs().sum()
    return (heat.abs()[~inside].sum() / total).item(), total.item()


@pytest.fixture(scope="module")
def planted():
    model = OneRegion().eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    target = int(model(x).argmax())
    return model, x, target


def test_occlusion_lights_up_the_region_and_nothing_else(planted):
    model, x, target = planted
    outside, total = _outside(ex.occlusion(model, x, target, window=4, stride=2), grow=3)  # a window's reach
    assert total > 0 and outside == 0


def test_grad_cam_lights_up_the_region_and_nothing_else(planted):
    model, x, target = planted
    stage = ex.stages(model)[-1]
    assert stage.name == "conv2" and isinstance(stage.act, nn.ReLU)
    outside, total = _outside(ex.grad_cam(model, x, target, stage), grow=2)  # two 3x3 convolutions
    assert total > 0 and outside < 1e-6


def test_integrated_gradients_light_up_the_region_and_nothing_else(planted):
    model, x, target = planted
    outside, total = _outside(ex.integrated_gradients(model, x, target, steps=16), grow=0)
    assert total > 0 and outside == 0


def test_a_wrong_region_would_be_caught(planted):
    """The check itself: a heat map shifted off the region fails it."""
    model, x, target = planted
    heat = ex.integrated_gradients(model, x, target, steps=16).roll(8, dims=1)
    assert _outside(heat, grow=0)[0] > 0.5


@pytest.mark.parametrize("variant", ["paper", "torchvision", "lenet5", "cifar-11pct"])
def test_explain_writes_every_picture_for_every_variant(tmp_path, photo, variant, capsys):
    from alexnet import create_model
    from alexnet.training.checkpoint import metadata_record, save_weights
    from alexnet.cli import main
    from alexnet.data.transforms import Normalizer

    model = create_model(variant, num_classes=3, init="kaiming" if variant != "lenet5" else "torchvision")
    size = model.info.input_size if variant in ("lenet5", "cifar-11pct") else 67
    weights = tmp_path / "w.safetensors"
    save_weights(weights, model, Normalizer.channel(),
                 metadata_record(model, variant, ["cat", "dog", "fish"], crop=size, resize=size + 8))
    out = tmp_path / "explain"
    assert main(["explain", str(weights), str(photo), "--out", str(out), "--layer", "conv2", "--ig-steps", "4",
                 "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [t["class"] for t in summary["top"]] and summary["target"]["class"] in ("cat", "dog", "fish")
    names = [s["name"] for s in summary["stages"]]
    assert names[:2] == ["conv1", "conv2"] and len(names) == {"paper": 5, "torchvision": 5, "lenet5": 2,
                                                              "cifar-11pct": 4}[variant]
    relu = variant != "lenet5"
    assert all((s["sparsity"] is not None) == relu for s in summary["stages"])
    for f in [*summary["files"].values(), *(s["file"] for s in summary["stages"])]:
        assert (out / f).stat().st_size > 0
    assert "gradcam_conv2" in summary["files"] and (out / "summary.json").is_file()


def test_bad_requests_are_one_line_errors(tmp_path, photo, capsys):
    from alexnet.cli import main

    assert main(["explain", str(tmp_path / "none.safetensors"), str(photo), "--out", str(tmp_path / "o")]) == 2
    assert "alexnet: error:" in capsys.readouterr().err


class Detector(nn.Module):
    """conv1: one 5x5 kernel equal to a planted cross (so it answers most where the cross is),
    pool 3/2, conv2: 1x1 copy; a linear head to have logits."""

    def __init__(self, cross: torch.Tensor) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(3, 1, 5, bias=False))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("pool1", nn.MaxPool2d(3, 2))
        self.features.add_module("conv2", nn.Conv2d(1, 1, 1, bias=False))
        self.features.add_module("relu2", nn.ReLU())
        with torch.no_grad():
            self.features.conv1.weight.copy_(cross.expand(1, 3, 5, 5))
            self.features.conv2.weight.fill_(1.0)
        self.head = nn.Linear(1, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_the_top_patches_of_a_unit_are_the_planted_patterns():
    """Ten 40-px noise images, a bright cross planted in three of them at known places: the
    cross detector's top three patches are those three images, each box holding its cross
    whole, at conv1 (field 5, stride 1) and after the pool (field 7, stride 2)."""
    cross = torch.zeros(5, 5)
    cross[2, :] = cross[:, 2] = 1.0
    torch.manual_seed(1)
    images = torch.rand(10, 3, 40, 40) * 0.3 - 0.15
    planted = {2: (5, 7), 5: (20, 30), 8: (31, 3)}  # image -> top-left of its cross
    for i, (r, c) in planted.items():
        images[i, :, r:r + 5, c:c + 5] += 3 * cross
    model = Detector(cross).eval()
    for name, size, stride in (("conv1", 5, 1), ("conv2", 7, 2)):
        stage = ex.stage_named(model, name)
        assert ex.field_geometry(model, stage) == (size, stride, 0)
        found = ex.top_patches(model, [images[:4], images[4:]], stage, [0], k=3)[0]  # two batches
        assert sorted(h["image"] for h in found) == sorted(planted)
        for h in found:
            r, c = planted[h["image"]]
            t, l, b, rt = h["box"]
            assert t <= r and l <= c and b >= r + 5 and rt >= c + 5, (name, h)


def test_units_search_a_folder_into_one_picture(tmp_path, photo, capsys):
    from alexnet import create_model
    from alexnet.training.checkpoint import metadata_record, save_weights
    from alexnet.cli import main
    from alexnet.data.transforms import Normalizer
    from conftest import write_tree

    tree = write_tree(tmp_path / "imgs", per_class=3, size=48)
    model = create_model("lenet5", num_classes=3, init="torchvision")
    weights = tmp_path / "w.safetensors"
    save_weights(weights, model, Normalizer.channel(), metadata_record(model, "lenet5", ["a", "b", "c"], 32, 36))
    assert main(["explain", str(weights), "--units", "conv2:0,5", "--data", str(tree), "--k", "4",
                 "--out", str(tmp_path / "u"), "--device", "cpu", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    files = sum(1 for p in tree.rglob("*") if p.is_file())
    assert found["stage"] == "conv2" and found["images"] == files and set(found["units"]) == {"0", "5"}
    assert all(len(hits) == 4 for hits in found["units"].values())
    assert (tmp_path / "u" / found["file"]).stat().st_size > 0
    assert main(["explain", str(weights), "--units", "conv2:99", "--data", str(tree), "--out", str(tmp_path)]) == 2
    assert "conv2 has channels 0-15, not 99" in capsys.readouterr().err


def test_where_a_units_field_starts_counts_the_padding():
    """torchvision's conv5 by hand: conv1 (11, stride 4, pad 2) starts at -2; pool1 keeps it;
    conv2 (pad 2 at stride 8) -18; conv3, conv4, conv5 (pad 1 at stride 16) -34, -50, -66:
    163 px, stride 16, from -66."""
    from alexnet import create_model

    model = create_model("torchvision", num_classes=10)
    assert ex.field_geometry(model, ex.stage_named(model, "conv5")) == (163, 16, -66)
    assert ex.field_geometry(model, ex.stage_named(model, "conv2")) == (51, 8, -18)


def test_explaining_leaves_the_network_as_it_was_even_on_an_error():
    from alexnet import create_model

    model = create_model("paper", num_classes=10).train()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert all(m.inplace for m in relus) and model._fc6_first
    with pytest.raises(RuntimeError, match="in the middle"):
        with ex.explainable(model):
            assert not model.training and not model._fc6_first and not any(m.inplace for m in relus)
            raise RuntimeError("in the middle")
    assert model.training and model._fc6_first and "_fc6_first" not in model.__dict__
    assert all(m.inplace for m in relus)
