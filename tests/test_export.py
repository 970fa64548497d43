import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from alexnet import create_model
from alexnet.checkpoint import load_model
from alexnet.cli import main
from alexnet.data.folder import load_image
from alexnet.data.transforms import EvalCrops
from alexnet.export import export


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


# ---------------------------------------------------------------------------
# Caffe: a caffemodel written with Caffe's schema (field numbers and types of caffe.proto),
# imported, and compared with Caffe's forward pass computed independently here.

def caffe_messages():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")
    F_ = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    opt, rep = F_.LABEL_OPTIONAL, F_.LABEL_REPEATED
    message("BlobShape", [("dim", 1, F_.TYPE_INT64, rep, None, True)])
    message("BlobProto", [("num", 1, F_.TYPE_INT32, opt, None, False), ("channels", 2, F_.TYPE_INT32, opt, None, False),
                          ("height", 3, F_.TYPE_INT32, opt, None, False), ("width", 4, F_.TYPE_INT32, opt, None, False),
                          ("data", 5, F_.TYPE_FLOAT, rep, None, True),
                          ("shape", 7, F_.TYPE_MESSAGE, opt, ".caffe.BlobShape", False)])
    message("LayerParameter", [("name", 1, F_.TYPE_STRING, opt, None, False),
                               ("type", 2, F_.TYPE_STRING, opt, None, False),
                               ("blobs", 7, F_.TYPE_MESSAGE, rep, ".caffe.BlobProto", False)])
    message("V1LayerParameter", [("name", 4, F_.TYPE_STRING, opt, None, False),
                                 ("type", 5, F_.TYPE_INT32, opt, None, False),
                                 ("blobs", 6, F_.TYPE_MESSAGE, rep, ".caffe.BlobProto", False)])
    message("NetParameter", [("name", 1, F_.TYPE_STRING, opt, None, False),
                             ("layers", 2, F_.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter", False),
                             ("layer", 100, F_.TYPE_MESSAGE, rep, ".caffe.LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}"))
            for n in ("BlobProto", "NetParameter")}


CAFFE_SHAPES = {
    "conv1": [(96, 3, 11, 11), (96,)], "conv2": [(256, 48, 5, 5), (256,)], "conv3": [(384, 256, 3, 3), (384,)],
    "conv4": [(384, 192, 3, 3), (384,)], "conv5": [(256, 192, 3, 3), (256,)],
    "fc6": [(4096, 9216), (4096,)], "fc7": [(4096, 4096), (4096,)], "fc8": [(1000, 4096), (1000,)],
}


def caffe_reference(blobs, bgr):
    """Caffe's AlexNet deploy net on a (B, 3, 227, 227) BGR, mean-subtracted, 0-255 input."""
    def lrn(x):  # Caffe LRN: local_size 5, alpha 1e-4, beta 0.75, k 1 (alpha divided by local_size)
        return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)

    w = {k: [torch.from_numpy(b) for b in v] for k, v in blobs.items()}
    x = F.max_pool2d(lrn(F.relu(F.conv2d(bgr, *w["conv1"], stride=4))), 3, 2, ceil_mode=True)
    x = F.max_pool2d(lrn(F.relu(F.conv2d(x, *w["conv2"], padding=2, groups=2))), 3, 2, ceil_mode=True)
    x = F.relu(F.conv2d(x, *w["conv3"], padding=1))
    x = F.relu(F.conv2d(x, *w["conv4"], padding=1, groups=2))
    x = F.max_pool2d(F.relu(F.conv2d(x, *w["conv5"], padding=1, groups=2)), 3, 2, ceil_mode=True)
    x = F.relu(F.linear(x.flatten(1), *w["fc6"]))
    x = F.relu(F.linear(x, *w["fc7"]))
    return F.linear(x, *w["fc8"])


@pytest.mark.parametrize("style", ["V1 layers", "layer"])
def test_import_caffe_bvlc_alexnet(tmp_path, style):
    from PIL import Image
    from skimage import data

    msgs = caffe_messages()
    rng = np.random.default_rng(0)
    blobs = {}
    net = msgs["NetParameter"](name="CaffeNet")
    for name, (wshape, bshape) in CAFFE_SHAPES.items():
        fan_in = int(np.prod(wshape[1:]))
        blobs[name] = [(rng.standard_normal(wshape) * np.sqrt(2 / fan_in)).astype(np.float32),
                       (rng.standard_normal(bshape) * 0.1).astype(np.float32)]
        layer = net.layers.add(name=name, type=4) if style == "V1 layers" else net.layer.add(name=name, type="Convolution")
        for b in blobs[name]:
            blob = layer.blobs.add()
            if style == "V1 layers" and b.ndim == 2:  # old files store fc weights as 1x1xOxI
                blob.num, blob.channels, blob.height, blob.width = 1, 1, *b.shape
            else:
                blob.shape.dim.extend(b.shape)
            blob.data.extend(b.ravel().tolist())
    (tmp_path / "bvlc_alexnet.caffemodel").write_bytes(net.SerializeToString())
    mean_bgr = (rng.uniform(90, 130, (3, 256, 256))).astype(np.float32)
    mean = msgs["BlobProto"](num=1, channels=3, height=256, width=256)
    mean.data.extend(mean_bgr.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())

    assert main(["import-weights", "caffe", str(tmp_path / "bvlc_alexnet.caffemodel"), "--mean",
                 str(tmp_path / "mean.binaryproto"), "--out", str(tmp_path / "caffe.safetensors")]) == 0
    model, normalizer, meta = load_model(tmp_path / "caffe.safetensors", variant="paper")
    assert meta["input_size"] == 227 and meta["model_kwargs"]["lrn_k"] == 1.0
    assert model.features.norm1.k == 1.0

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    rgb = load_image(str(tmp_path / "astronaut.png"), 256)  # uint8 (3, 256, 256)
    with torch.no_grad():
        ours = model(EvalCrops(normalizer, 227)(rgb[None])[:, 0])
        bgr = rgb.flip(0).float() - torch.from_numpy(mean_bgr)  # Caffe: BGR, 0-255, minus the mean image
        theirs = caffe_reference(blobs, bgr[None, :, 14:241, 14:241])
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().item())
    assert ours.argmax() == theirs.argmax()
    # the comparison can tell a wrong conversion apart: feeding RGB where Caffe wants BGR differs
    with torch.no_grad():
        wrong = caffe_reference(blobs, (rgb.float() - torch.from_numpy(mean_bgr))[None, :, 14:241, 14:241])
    assert (wrong - theirs).abs().max() > 10 * (ours - theirs).abs().max()
