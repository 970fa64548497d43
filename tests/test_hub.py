"""torch.hub: hubconf.py builds every network, and loads a weights file from ``alexnet train``."""

from pathlib import Path

import pytest
import torch

from alexnet import create_model, load_model
from alexnet.data.folder import load_image
from alexnet.data.transforms import EvalCrops

REPO = str(Path(__file__).resolve().parents[1])


def test_every_entry_point_builds_its_network():
    for entry, variant, kwargs in (("alexnet_paper", "paper", {}), ("alexnet_torchvision", "torchvision", {}),
                                   ("alexnet_paper_half", "paper-half", {}), ("alexnet_bn", "paper", {"norm": "batch"}),
                                   ("lenet5", "lenet5", {})):
        model = torch.hub.load(REPO, entry, source="local", num_classes=10)
        reference = create_model(variant, num_classes=10, **kwargs)
        assert model.options() == reference.options() and model.num_classes == 10
        assert {k: v.shape for k, v in model.state_dict().items()} == \
               {k: v.shape for k, v in reference.state_dict().items()}


def test_weights_from_a_run_load_through_the_hub(serve_run):
    model = torch.hub.load(REPO, "lenet5", source="local", weights=str(serve_run))
    trained, normalizer, meta = load_model(serve_run)
    assert not model.training and model.meta["classes"] == meta["classes"] == ["cat", "dog", "fish"]
    images = torch.stack([load_image(str(p), meta["resize"]) for p in sorted(serve_run.parent.glob("data/val/*/*"))])
    x = EvalCrops(normalizer, meta["input_size"])(images)[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(model(model.preprocess(images)), trained(x))  # the run's network and crops
    with pytest.raises(Exception, match="lenet5"):
        torch.hub.load(REPO, "alexnet_paper", source="local", weights=str(serve_run))  # not a paper network
