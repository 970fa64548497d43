"""The paper's test protocol on a network whose answer for every view is known: top-1, top-5
and loss come from the mean of the ten views' softmax outputs, not from their mean logits."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from alexnet.data.loader import Batch
from alexnet.data.transforms import EvalCrops, Normalizer, ten_crop_offsets
from alexnet.training.evaluate import evaluate

SIZE, CROP, CLASSES = 12, 8, 7
IDENTITY = Normalizer(torch.zeros(3, 1, 1), torch.full((3, 1, 1), 1 / 255))  # pixel values through unchanged


def coordinate_image(image: int) -> torch.Tensor:
    """uint8 (3, S, S): channel 0 = row, 1 = column, 2 = the image's number (+ 10)."""
    r = torch.arange(SIZE).view(SIZE, 1).expand(SIZE, SIZE)
    c = torch.arange(SIZE).view(1, SIZE).expand(SIZE, SIZE)
    return torch.stack([r, c, torch.full_like(r, 10 + image)]).to(torch.uint8)


def view_logits(rng: np.random.Generator, label: int) -> np.ndarray:
    """(10, classes): one view very sure of another class, nine mildly for ``label``. Mean
    logits then pick the other class; the mean softmax picks ``label``."""
    logits = rng.normal(0, 0.1, (10, CLASSES))
    wrong = (label + 1) % CLASSES
    logits[0, wrong] += 20
    logits[1:, label] += 1.0
    return logits


class ByView(nn.Module):
    """Reads which image and which of the ten views it was given (from the pixel
    coordinates) and returns that view's logits from a table."""

    def __init__(self, table: dict[tuple[int, int], np.ndarray]) -> None:
        super().__init__()
        self.table = table
        self.offsets = ten_crop_offsets(SIZE, CROP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = []
        for v in x.round().long():
            image, top = int(v[2, 0, 0]) - 10, int(v[0, 0, 0])
            first, last = int(v[1, 0, 0]), int(v[1, 0, -1])
            flipped = first > last
            view = self.offsets.index((top, min(first, last))) + 5 * flipped
            rows.append(torch.tensor(self.table[image, view], dtype=torch.float32))
        return torch.stack(rows)


class Fixed:
    """Batches of given images and labels: the loader interface evaluate reads."""

    def __init__(self, batches):
        self.batches, self.device = batches, torch.device("cpu")

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    labels = [2, 5, 0, 3]
    table = {(i, v): row for i, y in enumerate(labels) for v, row in enumerate(view_logits(rng, y))}
    table[3, 0] = table[3, 0] * 0  # image 3: no confident wrong view, nine weak ones still for its label
    images = torch.stack([coordinate_image(i) for i in range(4)])
    return ByView(table), images, torch.tensor(labels), table


def test_ten_crop_ranks_the_mean_of_the_views_softmax(case):
    model, images, labels, table = case
    batches = Fixed([Batch(images[:3], labels[:3]), Batch(images[3:], labels[3:])])
    result = evaluate(model, batches, EvalCrops(IDENTITY, CROP, ten_crop=True), progress=False)
    probs = np.stack([softmax(np.stack([table[i, v] for v in range(10)])).mean(0) for i in range(4)])
    ranks = [int((probs[i] > probs[i, y]).sum()) for i, y in enumerate(labels.tolist())]
    assert ranks == [0, 0, 0, 0]  # every label first by the mean softmax ...
    mean_logits = np.stack([np.stack([table[i, v] for v in range(10)]).mean(0) for i in range(4)])
    assert [int(mean_logits[i].argmax() == y) for i, y in enumerate(labels.tolist())] == [0, 0, 0, 1]  # ... not by mean logits
    assert result.top1 == 1.0 and result.top5 == 1.0 and result.images == 4 and result.protocol == "ten-crop"
    expected_loss = -np.mean([math.log(probs[i, y]) for i, y in enumerate(labels.tolist())])
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_ten_crop_views_go_through_the_network_a_batchs_worth_at_a_time(case):
    """A batch of 3 images' 30 views in forward passes of at most 3 rows, in their order (the
    table model names each row's image and view: a reordered row would change the result),
    not one pass ten times the batch's size, which ran 1.2 times slower an image on a 2-core CPU."""
    model, images, labels, table = case
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    batches = Fixed([Batch(images[:3], labels[:3]), Batch(images[3:], labels[3:])])
    regions = Regions()
    result = evaluate(model, batches, EvalCrops(IDENTITY, CROP, ten_crop=True), autocast=regions, progress=False)
    assert seen == [3] * 10 + [1] * 10
    assert result.top1 == 1.0 and result.images == 4
    # one autocast region a batch, not one a pass: each region casts the weights again
    assert regions.entered == 2


class Regions:
    """A stand-in for an autocast context that counts how often it is entered."""

    def __init__(self) -> None:
        self.entered = 0

    def __enter__(self):
        self.entered += 1

    def __exit__(self, *exc):
        return False


def test_top_k_counts_the_label_within_the_k_best(case):
    model, images, labels, table = case
    # relabel: image 0's label becomes its 2nd-ranked class, image 1's its 6th
    probs = [softmax(np.stack([table[i, v] for v in range(10)])).mean(0) for i in range(4)]
    order = [np.argsort(-p) for p in probs]
    relabelled = torch.tensor([order[0][1], order[1][5], order[2][0], order[3][4]])
    result = evaluate(model, Fixed([Batch(images, relabelled)]), EvalCrops(IDENTITY, CROP, ten_crop=True),
                      progress=False)
    assert result.top1 == pytest.approx(1 / 4) and result.top5 == pytest.approx(3 / 4)
    center = evaluate(model, Fixed([Batch(images, labels)]), EvalCrops(IDENTITY, CROP), progress=False)
    center_probs = [softmax(table[i, 4]) for i in range(4)]  # the center patch is view 4
    assert center.protocol == "center"
    assert center.top1 == pytest.approx(np.mean([p.argmax() == y for p, y in zip(center_probs, labels.tolist())]))


def test_a_ten_crop_pass_also_reports_its_center_view_as_the_center_protocol_does(case):
    model, images, labels, table = case
    ranked = [np.argsort(-table[i, 4]) for i in range(4)]  # the center patch is view 4
    relabelled = torch.tensor([ranked[0][1], ranked[1][0], ranked[2][5], ranked[3][3]])  # its 2nd, 1st, 6th, 4th class
    ten = evaluate(model, Fixed([Batch(images[:3], relabelled[:3]), Batch(images[3:], relabelled[3:])]),
                   EvalCrops(IDENTITY, CROP, ten_crop=True), progress=False)
    center = evaluate(model, Fixed([Batch(images, relabelled)]), EvalCrops(IDENTITY, CROP), progress=False)
    assert (center.top1, center.top5) == (pytest.approx(1 / 4), pytest.approx(3 / 4))
    assert ten.center_top1 == pytest.approx(center.top1) and ten.center_top5 == pytest.approx(center.top5)
    assert (ten.top1, ten.top5) == (pytest.approx(1 / 4), pytest.approx(2 / 4))  # the ten views' mean ranks otherwise
    for view in (0, 9):  # another patch, or the center's reflection, would not give the center's figures
        ranks = [int((table[i, view] > table[i, view][y]).sum()) for i, y in enumerate(relabelled.tolist())]
        assert (np.mean([r < 1 for r in ranks]), np.mean([r < 5 for r in ranks])) != (1 / 4, 3 / 4)
    assert "center crop alone: top-1 25.00%, top-5 75.00%" in ten.summary() and center.center_top1 is None


def test_predict_ten_crop_probabilities_are_the_mean_softmax(case, tmp_path, monkeypatch):
    from alexnet import infer
    from alexnet.training.runtime import Runtime
    from alexnet.training.distributed import Env

    model, images, labels, table = case
    for i in range(4):
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    meta = {"num_classes": CLASSES, "classes": [f"c{k}" for k in range(CLASSES)], "input_size": CROP,
            "resize": SIZE}
    loaded = infer.Loaded(model, IDENTITY, meta, Runtime(torch.device("cpu"), None, False, Env()))
    monkeypatch.setattr(infer.Loaded, "from_path", classmethod(lambda cls, *a, **k: loaded))
    results = infer.predict("stub", [str(tmp_path)], topk=3, ten_crop=True, workers=0, progress=False)
    assert [r["path"] for r in results] == [str(tmp_path / f"{i}.png") for i in range(4)]
    for i, r in enumerate(results):
        probs = softmax(np.stack([table[i, v] for v in range(10)])).mean(0)
        best = np.argsort(-probs)[:3]
        assert [t["index"] for t in r["top"]] == best.tolist()
        assert [t["prob"] for t in r["top"]] == pytest.approx(probs[best].tolist(), rel=1e-5)
        assert r["top"][0]["class"] == f"c{best[0]}"
