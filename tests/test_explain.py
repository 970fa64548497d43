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
    outside, total = _outside(ex.grad_cam(model, x, target, stage.output), grow=2)  # two 3x3 convolutions
    assert total > 0 and outside < 1e-6


def test_integrated_gradients_light_up_the_region_and_nothing_else(planted):
    model, x, target = planted
    outside, total = _outside(ex.integrated_gradients(model, x, target, steps=16), grow=0)
    assert total > 0 and outside == 0


@pytest.fixture(scope="module")
def monotone():
    """OneRegion with every weight made positive, and a positive input: covering any pixel of
    the region can only lower class 0's score, and every pixel of it raises it."""
    model = OneRegion().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    torch.manual_seed(2)
    return model, torch.rand(1, 3, 32, 32) * 0.9 + 0.1, 0


def test_each_method_lights_the_whole_region_with_the_right_sign(monotone):
    """Occlusion is the score's drop (positive), Grad-CAM the positive part: both cover every
    pixel of the region, as integrated gradients do; a flipped sign, or a map shrunk to its
    peak, would fail."""
    model, x, target = monotone
    region = (slice(8, 16), slice(16, 24))
    occluded = ex.occlusion(model, x, target, window=4, stride=2)
    cam = ex.grad_cam(model, x, target, ex.stages(model)[-1].output)
    ig = ex.integrated_gradients(model, x, target, steps=16)
    assert occluded.min() >= -1e-6 and (occluded[region] > 0).all()
    assert cam.min() >= 0 and (cam[region] > 0).all()
    assert (ig[region] > 0).all()


class Pooled(OneRegion):
    """OneRegion with a 2x2 max-pool between its convolutions: conv2's maps are 16x16, so
    Grad-CAM's picture is upsampled to the 32-px input."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU())
        with torch.no_grad():
            for p in self.parameters():
                p.abs_()


def test_grad_cam_from_a_coarser_map_lands_on_the_region():
    """The 16x16 map upsampled lies over the region: nothing beyond its reach (conv1's pixel,
    the pool's 2, conv2's 2 more, the upsampling's one), and its centre of mass within 1.5 px
    of the region's centre (11.5, 19.5)."""
    model = Pooled().eval()
    torch.manual_seed(3)
    x = torch.rand(1, 3, 32, 32) * 0.9 + 0.1
    cam = ex.grad_cam(model, x, 0, ex.stages(model)[-1].output)
    assert cam.shape == (32, 32)
    outside, total = _outside(cam, grow=5)
    assert total > 0 and outside < 1e-6
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centre = ((cam * rows).sum() / cam.sum()).item(), ((cam * cols).sum() / cam.sum()).item()
    assert abs(centre[0] - 11.5) < 1.5 and abs(centre[1] - 19.5) < 1.5, centre


def test_the_most_active_channels_and_the_sparsity_are_the_maps():
    """Four channels whose maps are constant (weights 0, biases -1, 2, 0.5, 3): after the
    ReLU one of four is all zeros (sparsity 0.25), and the channels rank 3, 1, 2, 0."""
    model = nn.Module()
    model.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    with torch.no_grad():
        model.features[0].weight.zero_()
        model.features[0].bias.copy_(torch.tensor([-1.0, 2.0, 0.5, 3.0]))
    model.forward = lambda x: model.features(x)
    maps = ex.stage_maps(model, torch.rand(1, 3, 10, 10), extra=True)
    assert list(maps) == ["conv1", "pool1"] and maps["pool1"].shape == (4, 4, 4)
    assert ex.most_active(maps["conv1"], relu=True) == ([3, 1, 2, 0], 0.25)
    assert ex.most_active(maps["conv1"], relu=True, count=2) == ([3, 1], 0.25)
    assert ex.most_active(maps["conv1"], relu=False)[1] is None


def test_each_stages_normalised_and_pooled_maps_are_named_in_order():
    from alexnet import create_model

    names = [n for n, _, _ in ex.map_points(create_model("paper", num_classes=10), extra=True)]
    assert names == ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    bn = ex.map_points(create_model("paper", num_classes=10, norm="batch"), True)
    assert [(n, relu) for n, _, relu in bn][:3] == [("norm1", False), ("conv1", True), ("pool1", True)]  # BN, ReLU, pool
    names = [n for n, _, _ in ex.map_points(create_model("cifar-11pct", num_classes=10), extra=True)]
    assert names[:4] == ["conv1", "pool1", "norm1", "conv2"]


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
    layer = "pool2" if variant == "paper" else "conv2"  # a pooled map takes Grad-CAM too
    assert main(["explain", str(weights), str(photo), "--out", str(out), "--layer", layer, "--ig-steps", "4",
                 "--device", "cpu", "--json"] + (["--maps", "all"] if variant == "paper" else [])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [t["class"] for t in summary["top"]] and summary["target"]["class"] in ("cat", "dog", "fish")
    names = [s["name"] for s in summary["stages"]]
    assert names[:2] == (["conv1", "norm1"] if variant == "paper" else ["conv1", "conv2"])
    assert len(names) == {"paper": 10, "torchvision": 5, "lenet5": 2, "cifar-11pct": 4}[variant]
    relu = variant != "lenet5"
    assert all((s["sparsity"] is not None) == relu for s in summary["stages"])
    for f in [*summary["files"].values(), *(s["file"] for s in summary["stages"])]:
        assert (out / f).stat().st_size > 0
    assert f"gradcam_{layer}" in summary["files"] and (out / "summary.json").is_file()


@pytest.fixture
def lenet_weights(tmp_path):
    from alexnet import create_model
    from alexnet.data.transforms import Normalizer
    from alexnet.training.checkpoint import metadata_record, save_weights

    model = create_model("lenet5", num_classes=3, init="torchvision")
    weights = tmp_path / "w.safetensors"
    save_weights(weights, model, Normalizer.channel(), metadata_record(model, "lenet5", ["a", "b", "c"], 32, 36))
    return weights


def test_bad_requests_are_one_line_errors(tmp_path, photo, lenet_weights, capsys):
    from alexnet.cli import main

    assert main(["explain", str(tmp_path / "none.safetensors"), str(photo), "--out", str(tmp_path / "o")]) == 2
    assert "alexnet: error:" in capsys.readouterr().err
    a_file = tmp_path / "taken"
    a_file.write_text("mine")
    w, o, d = str(lenet_weights), str(tmp_path / "o"), str(tmp_path)
    for args, says in (([w, str(photo), "--out", str(a_file)], "is a file; give a folder"),
                       ([w, "--units", "conv2", "--data", d, "--out", str(a_file)], "is a file"),
                       ([w, str(photo), "--units", "conv2", "--data", d, "--out", o], "drop the IMAGE"),
                       ([w, str(photo), "--data", d, "--out", o], "--data is the folder that --units"),
                       ([w, "--units", "conv2:", "--data", d, "--out", o], "channels are numbers"),
                       ([w, "--units", "pool1", "--data", d, "--out", o], "--units 'pool1'"),
                       ([w, "--units", "conv1", "--layer", "conv2", "--data", d, "--out", o],
                        "--layer is for one IMAGE"),
                       ([w, str(photo), "--layer", "pool9", "--out", o], "maps are conv1, pool1")):
        assert main(["explain", *args, "--device", "cpu"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("alexnet: error:") and says in err and err.count("\n") == 1, (args, err)
    assert a_file.read_text() == "mine" and not (tmp_path / "o").exists()


def test_a_second_explanation_in_the_same_folder_replaces_the_first(tmp_path, photo, lenet_weights, capsys):
    """Its pictures replace the first one's; those of the first it does not draw (Grad-CAM at
    a --layer it no longer asks for) are removed; the user's own files stay."""
    from alexnet.cli import main

    out = tmp_path / "why"
    out.mkdir()
    (out / "notes.png").write_bytes(b"mine")
    assert main(["explain", str(lenet_weights), str(photo), "--out", str(out), "--layer", "conv1", "--ig-steps",
                 "2", "--device", "cpu"]) == 0
    assert (out / "gradcam_conv1.png").is_file()
    assert main(["explain", str(lenet_weights), str(photo), "--out", str(out), "--ig-steps", "2",
                 "--device", "cpu", "--json"]) == 0
    listed = json.loads((out / "summary.json").read_text())
    assert "gradcam_conv1" not in listed["files"] and not (out / "gradcam_conv1.png").exists()
    assert all((out / f).is_file() for f in listed["files"].values())
    assert (out / "notes.png").read_bytes() == b"mine"


def test_another_programs_summary_json_removes_nothing(tmp_path, photo, lenet_weights):
    """A folder's own summary.json naming the user's pictures (even ones named like explain's)
    is not an earlier explanation: explain replaces the file and removes none of them."""
    from alexnet.cli import main

    out = tmp_path / "results"
    out.mkdir()
    for name in ("plot.png", "occlusion.png", "maps_conv9.png"):
        (out / name).write_bytes(b"mine")
    (out / "summary.json").write_text(json.dumps({"file": "plot.png", "files": {"a": "occlusion.png"},
                                                  "stages": [{"file": "maps_conv9.png"}]}))
    assert main(["explain", str(lenet_weights), str(photo), "--out", str(out), "--ig-steps", "2",
                 "--device", "cpu"]) == 0
    assert (out / "plot.png").read_bytes() == b"mine" and (out / "maps_conv9.png").read_bytes() == b"mine"


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
            assert t <= r and l <= c and b >= r + 5 and rt >= c + 5, (name, h)  # the cross whole
            i, j = h["unit"]
            assert (t, l) == (i * stride, j * stride) and b - t == rt - l == size, (name, h)  # the unit's field
    # at conv1 the field is the cross itself
    found = ex.top_patches(model, [images], ex.stage_named(model, "conv1"), [0], k=3)[0]
    assert sorted(tuple(h["box"]) for h in found) == sorted((r, c, r + 5, c + 5) for r, c in planted.values())


def test_a_padded_units_field_starts_before_the_image_and_is_clipped_to_it():
    """conv1 padded by 2: unit (i, j) sees rows i - 2 .. i + 3, so the cross planted at (r, c)
    wins at unit (r + 2, c + 2), its box the cross; a cross in the corner is found by the unit
    at (2, 2), and a unit at the edge has its box clipped to the crop."""
    cross = torch.zeros(5, 5)
    cross[2, :] = cross[:, 2] = 1.0
    model = Detector(cross).eval()
    model.features.conv1.padding = (2, 2)
    stage = ex.stage_named(model, "conv1")
    assert ex.field_geometry(model, stage) == (5, 1, -2)
    torch.manual_seed(4)
    images = torch.rand(3, 3, 40, 40) * 0.3 - 0.15
    planted = {0: (0, 0), 1: (12, 30), 2: (35, 35)}
    for i, (r, c) in planted.items():
        images[i, :, r:r + 5, c:c + 5] += 3 * cross
    found = ex.top_patches(model, [images], stage, [0], k=3)[0]
    for h in found:
        r, c = planted[h["image"]]
        assert h["unit"] == [r + 2, c + 2] and h["box"] == [r, c, r + 5, c + 5], h
    edge = ex.top_patches(model, [torch.zeros(1, 3, 40, 40).index_fill_(3, torch.tensor([0]), 3.0)], stage, [0],
                          k=1)[0][0]  # a bright left column: the strongest unit sits over it
    t, l, b, rt = edge["box"]
    assert l == 0 and rt - l < 5 and edge["unit"][1] <= 1  # clipped at the left edge


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
