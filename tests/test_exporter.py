import numpy as np
import pytest
import torch
import torchvision

from alexnet import create_model
from alexnet.training.checkpoint import load_model
from alexnet.cli import main
from conftest import explains_a_photo
from alexnet.data.folder import load_image
from alexnet.data.transforms import EvalCrops
from alexnet.exporter import export


def test_onnx_export_matches_pytorch_with_dynamic_batch(trained_run, tmp_path):
    import onnxruntime as ort

    report = export(trained_run, "onnx", tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    model, _, _ = load_model(trained_run)
    x = torch.randn(5, 3, 67, 67)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_with_preprocessing_gives_predict_probabilities(trained_run, tmp_path):
    import onnxruntime as ort
    from skimage import data
    from PIL import Image

    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    export(trained_run, "onnx", tmp_path / "p.onnx", preprocess=True)
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    image = load_image(str(tmp_path / "coffee.png"), 76)
    probs = session.run(None, {"images": image[None].numpy()})[0][0]
    model, normalizer, _ = load_model(trained_run)
    with torch.no_grad():
        expected = torch.softmax(model(EvalCrops(normalizer, 67)(image[None])[:, 0]), 1)[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert probs.sum() == pytest.approx(1, abs=1e-5)


def test_torch_export_program(trained_run, tmp_path, capsys):
    assert main(["export", str(trained_run), "--format", "torch-export", "--out", str(tmp_path / "m.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    model, _, _ = load_model(trained_run)
    x = torch.randn(7, 3, 67, 67)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))


def test_import_torchvision_weights(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.alexnet().eval()
    torch.save(reference.state_dict(), tmp_path / "alexnet-owt.pth")
    assert main(["import-weights", "torchvision", str(tmp_path / "alexnet-owt.pth"),
                 "--out", str(tmp_path / "tv.safetensors")]) == 0
    model, normalizer, meta = load_model(tmp_path / "tv.safetensors", variant="torchvision", num_classes=1000)
    assert meta["classes"][0] == "tench" and meta["input_size"] == 224 and meta["resize"] == 256
    assert torch.allclose(normalizer.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    explains_a_photo(tmp_path / "tv.safetensors", tmp_path, stages=5)


class Payload:
    """An arbitrary object: loading it would run pickled code, which weights_only refuses."""


def test_import_rejects_wrong_files(tmp_path, capsys):
    torch.save(create_model("paper").state_dict(), tmp_path / "paper.pth")
    assert main(["import-weights", "torchvision", str(tmp_path / "paper.pth"), "--out", str(tmp_path / "x.st")]) == 2
    assert "does not fit this network" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(3), "code": Payload()}, tmp_path / "pickle.pth")  # needs unpickling code
    assert main(["import-weights", "torchvision", str(tmp_path / "pickle.pth"), "--out", str(tmp_path / "x.st")]) == 2
    assert "weights_only=True" in capsys.readouterr().err
    (tmp_path / "bad.caffemodel").write_bytes(b"\x0a\xff\xff\xff")
    assert main(["import-weights", "caffe", str(tmp_path / "bad.caffemodel"), "--out", str(tmp_path / "x.st")]) == 2
    assert "not a readable caffemodel" in capsys.readouterr().err
