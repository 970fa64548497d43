import json

import numpy as np
import pytest
import torch

from alexnet.training.checkpoint import load_model
from alexnet.cli import main
from alexnet.data.folder import load_image
from alexnet.data.transforms import EvalCrops
from alexnet.infer import load_features, nearest, neighbors, predict
from conftest import write_fmnist_pngs


def test_predict_names_probabilities_and_accuracy(trained_run, tmp_path, fmnist_dir):
    files = write_fmnist_pngs(tmp_path / "imgs", "test", 64, fmnist_dir)
    # on the CPU, where the reference below runs: the check is of the plumbing, not of a device's rounding
    results = predict(trained_run, [str(tmp_path / "imgs")], batch_size=16, device="cpu", workers=0, progress=False)
    assert [r["path"] for r in results] == sorted(str(p) for p, _ in files)
    model, normalizer, meta = load_model(trained_run)
    for r in results:
        probs = [t["prob"] for t in r["top"]]
        assert len(r["top"]) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["class"] == meta["classes"][t["index"]] for t in r["top"])
    truth = {str(p): label for p, label in files}
    hits = sum(r["top"][0]["index"] == truth[r["path"]] for r in results)
    assert hits / len(results) > 0.3  # a briefly trained network, well above chance (0.1)
    # the probabilities are those of the model on the center crop
    x = EvalCrops(normalizer, 67)(load_image(results[0]["path"], 76)[None])[:, 0]
    with torch.no_grad():
        p = torch.softmax(model(x), 1)[0]
    assert p[results[0]["top"][0]["index"]].item() == pytest.approx(results[0]["top"][0]["prob"], abs=1e-5)
    ten = predict(trained_run, [results[0]["path"]], ten_crop=True, workers=0, progress=False)
    assert ten[0]["protocol"] == "ten-crop" and ten[0]["top"][0]["prob"] != results[0]["top"][0]["prob"]


def test_ten_crop_probabilities_run_a_batch_of_views_at_a_time(trained_run):
    """Ten passes of the batch's size, not one of ten times it, with the same result as one pass."""
    from alexnet.infer import Loaded
    from alexnet.training.evaluate import average_views

    net = Loaded.from_path(trained_run, "cpu", "fp32")
    images = torch.randint(0, 256, (3, 3, 76, 76), dtype=torch.uint8)
    sizes = []
    hook = net.model.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    with torch.no_grad():
        probs = net.probabilities(images, ten_crop=True)
    hook.remove()
    assert sizes == [3] * 10
    views = net.crops(True)(images)
    with torch.no_grad():
        whole = average_views(net.model(views.flatten(0, 1)), 10)
    torch.testing.assert_close(probs, whole, rtol=1e-5, atol=1e-6)


def test_predict_cli_json_and_errors(trained_run, tmp_path, capsys):
    from skimage import data
    from PIL import Image

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    # A named file that cannot be read: the others are still classified, and the status says so
    assert main(["predict", str(trained_run), str(tmp_path / "cat.jpg"), str(tmp_path / "broken.jpg"),
                 "--json", "--workers", "0"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out) == 1 and out[0]["path"].endswith("cat.jpg") and len(out[0]["top"]) == 5
    assert f"skipped {tmp_path / 'broken.jpg'} (not an image" in captured.err
    assert "could not read 1 of the paths named" in captured.err
    # In a folder it is skipped, named and counted: the run succeeds
    assert main(["predict", str(trained_run), str(tmp_path), "--json", "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1 and "skipped 1 unreadable image(s) in the folders" in captured.err
    assert main(["features", str(trained_run), str(tmp_path / "cat.jpg"), str(tmp_path / "broken.jpg"),
                 "--out", str(tmp_path / "f.npz"), "--workers", "0"]) == 1
    assert "could not read 1 of the paths named" in capsys.readouterr().err
    assert load_features(tmp_path / "f.npz").features.shape == (1, 4096)  # the readable one is saved
    assert main(["predict", str(trained_run), str(tmp_path / "missing.jpg")]) == 1  # like cat: named, status 1
    assert "missing.jpg (not found)" in capsys.readouterr().err


def test_features_are_the_fc7_activations(trained_run, tmp_path, fmnist_dir, capsys):
    write_fmnist_pngs(tmp_path / "imgs", "test", 12, fmnist_dir)
    assert main(["features", str(trained_run), str(tmp_path / "imgs"), "--out", str(tmp_path / "f.npz"),
                 "--workers", "0", "--device", "cpu"]) == 0
    feats, paths, layer = load_features(tmp_path / "f.npz")
    assert layer == "fc7"  # the default: the last hidden layer
    assert feats.shape == (12, 4096) and len(paths) == 12 and (feats >= 0).all()
    model, normalizer, _ = load_model(trained_run)
    x = EvalCrops(normalizer, 67)(torch.stack([load_image(p, 76) for p in paths[:3]]))[:, 0]
    with torch.no_grad():
        expected = model.forward_features(x, "fc7").numpy()
    np.testing.assert_allclose(feats[:3], expected, rtol=1e-4, atol=1e-5)


def test_nearest_neighbours_find_the_near_duplicate(trained_run, tmp_path, fmnist_dir):
    from PIL import Image

    gallery = write_fmnist_pngs(tmp_path / "gallery", "train", 40, fmnist_dir)
    source = gallery[7][0]
    # the query: the same garment, re-encoded as a slightly brighter JPEG
    img = np.asarray(Image.open(source)).astype(np.int16) + 6
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(tmp_path / "query.jpg", quality=92)
    out = tmp_path / "grid.png"
    results = neighbors(trained_run, [str(tmp_path / "query.jpg")], [str(tmp_path / "gallery")], k=5, out=out,
                        progress=False)
    ranked = [n["path"] for n in results[0]["neighbors"]]
    assert ranked[0] == str(source) and len(ranked) == 5
    d = [n["distance"] for n in results[0]["neighbors"]]
    assert d == sorted(d)
    grid = Image.open(out)
    assert grid.size == (6 * 100 + 4, 104)  # query + 5 neighbours, 96-px tiles with 4-px gaps


def test_nearest_is_euclidean():
    g = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]], np.float32)
    idx, dist = nearest(np.array([[0.9, 1.2]], np.float32), g, 2)
    assert idx.tolist() == [[2, 0]] and dist[0, 0] == pytest.approx(np.hypot(0.1, 0.2), rel=1e-5)


def test_finetune_freezes_features_and_learns_new_classes(trained_run, image_tree, tmp_path):
    before, _, _ = load_model(trained_run)
    assert main(["finetune", str(trained_run), "--data", str(image_tree), "--epochs", "2", "--batch-size", "4",
                 "--workers", "0", "--out", str(tmp_path / "ft"), "--lr", "0.001", "--freeze", "features"]) == 0
    after, _, meta = load_model(tmp_path / "ft")
    assert meta["num_classes"] == 3 and meta["classes"] == ["cat", "dog", "fish"]
    assert meta["variant"] == "paper" and meta["input_size"] == 67  # taken from the source weights
    for (name, a), b in zip(before.features.state_dict().items(), after.features.state_dict().values()):
        assert torch.equal(a, b), name  # --freeze features
    assert not torch.equal(before.classifier.fc7.weight, after.classifier.fc7.weight)
    assert after.classifier.fc8.weight.shape == (3, 4096)


def test_bf16_predictions_agree_with_fp32(trained_run, tmp_path, fmnist_dir):
    write_fmnist_pngs(tmp_path / "imgs", "test", 16, fmnist_dir)
    fp32 = predict(trained_run, [str(tmp_path / "imgs")], workers=0, progress=False)
    bf16 = predict(trained_run, [str(tmp_path / "imgs")], workers=0, progress=False, precision="bf16")
    same = sum(a["top"][0]["index"] == b["top"][0]["index"] for a, b in zip(fp32, bf16))
    assert same >= 14  # bf16 rounding may flip a near tie, not the bulk
    assert max(abs(a["top"][0]["prob"] - b["top"][0]["prob"]) for a, b in zip(fp32, bf16)) < 0.05


def test_bf16_evaluation_runs_in_bf16_and_agrees_with_fp32(trained_run, monkeypatch):
    """evaluate --precision bf16: the convolutions compute in bf16 on channels-last maps, and
    the accuracy moves by a near tie at most; a bad value is one line."""
    from alexnet import AlexNetError
    from alexnet.infer import evaluate_weights

    seen = []
    conv2d = torch.nn.functional.conv2d

    def conv(self, x, w, b):
        y = conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        seen.append(y.dtype if x.is_contiguous(memory_format=torch.channels_last) or y.dtype == torch.float32
                    else "bf16 without channels-last")
        return y

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", conv)
    args = dict(split="test", limit=128, workers=0, progress=False)
    fp32 = evaluate_weights(trained_run, **args)
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = evaluate_weights(trained_run, precision="bf16", **args)
    assert set(seen) == {torch.bfloat16}
    assert fp32.images == bf16.images == 128 and abs(fp32.top1 - bf16.top1) <= 2 / 128
    with pytest.raises(AlexNetError, match="--precision must be fp32, bf16 or auto, got 'fp16'"):
        evaluate_weights(trained_run, precision="fp16", **args)
